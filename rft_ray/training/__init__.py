"""Training: the one loop (`loop`), in-process runs (`runner`), the weights of a run's evaluation points kept in
the result store and loaded back (`weights`) and the embedded model's pre-training (`pretrain`). Results leave the loop through an
observer (`RunObserver`)."""
