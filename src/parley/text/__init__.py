"""Text handling around the model: UTF-8 detokenizing, stop strings and chat templates."""
