"""Real-ESRGAN second-order degradation synthesizer writing WebDataset shards."""
