"""Training: the one loop (`loop`), in-process runs (`runner`) and the embedded model's pre-training
(`pretrain`). Results leave the loop through an observer (`RunObserver`)."""
