"""On-device vision core: TFLite runtime, model bundle, detection, landmarks, iris, alignment, embedding."""
