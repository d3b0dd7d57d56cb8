"""Language models, encoders and the multimodal wrapper."""
