"""JumpScope: train, explore and validate JumpReLU sparse autoencoders."""

__version__ = "0.1.0"
