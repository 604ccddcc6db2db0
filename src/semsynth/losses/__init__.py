"""Loss terms shared by the methods (each term exists once).

* :mod:`semsynth.losses.n1` — OASIS's class-balanced (N+1)-class cross-entropy and LabelMix.
* :mod:`semsynth.losses.gan` — hinge GAN loss and discriminator feature matching over the
  scales of a multi-scale discriminator (SPADE, pix2pixHD).
* :mod:`semsynth.losses.vgg` — the VGG perceptual loss (pix2pixHD/SPADE weights).
* :mod:`semsynth.losses.kl` — the KL term of a VAE image encoder (SPADE).
"""
