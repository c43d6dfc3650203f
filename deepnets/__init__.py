"""deepnets: a DeepNets-1M-style generator of neural architectures."""
