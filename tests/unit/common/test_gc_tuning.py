import gc

from services.common.gc_tuning import freeze_startup_heap


def test_freezing_moves_the_live_heap_out_of_collections_and_collects_garbage_first():
    class Node:
        pass

    cycle = Node()
    cycle.self = cycle
    survivor = Node()
    survivor.self = survivor
    del cycle  # garbage (a cycle) at start-up must be collected, not frozen forever
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert not any(type(o) is Node for o in gc.get_objects())  # the survivor is frozen, out of reach
        assert survivor.self is survivor
    finally:
        gc.unfreeze()
    assert sum(type(o) is Node for o in gc.get_objects()) == 1  # only the survivor was frozen
