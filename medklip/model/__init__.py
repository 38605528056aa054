"""The model: `network` (MedKLIP's forward pass: image encoder, knowledge queries, decoder, heads), `losses` (the
existence, position-contrastive, semantic and box terms) and `grounding` (attention maps -> heatmaps, the pointing
game). May import `medklip.data` and `medklip.labels`; knows nothing of training, evaluation or tracking.
"""
