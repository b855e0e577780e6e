"""Training job: SASRec-family next-item model, leave-one-out evaluation, bundle export."""
