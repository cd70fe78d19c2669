"""Training of the 2D U-Net and U-Net + SSPP: configuration, data sampling, augmentation, loss, loop, training state."""
