"""Baselines to compare the graph hypernetworks against.

- :mod:`ghn.baselines.gpt`: G.pt (Peebles et al., 2022), a diffusion transformer that
  generates checkpoints of a tiny CIFAR-10 CNN, and its checkpoint data set.
"""
