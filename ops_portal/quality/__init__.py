"""Video-quality detection on decoded keyframes (issue 7): pure numpy detectors and the sampler."""
