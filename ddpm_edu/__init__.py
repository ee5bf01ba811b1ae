"""ddpm_edu: denoising diffusion models, built chapter by chapter in a Jupyter Book.

Most modules here are generated from the book's chapter notebooks (see the header of each
file for the notebook to edit); the plain modules hold plumbing that teaches nothing.
"""

__version__ = "0.1.0"
