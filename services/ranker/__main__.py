from services.ranker.main import main

main()
