"""SR methods: the registry, the Real-ESRGAN x4plus network, tiled inference."""
