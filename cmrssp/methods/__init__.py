"""The four self-supervised pretraining methods (protocol 2), each a Task for the one loop:
SimCLR and PCL (:mod:`.contrastive`), DINO (:mod:`.dino`) and MIM (:mod:`.mim`)."""

METHODS = ("simclr", "pcl", "dino", "mim")
