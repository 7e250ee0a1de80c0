"""Models: timm backbones (`backbones`) and the fine-tuning strategies (`strategies`, one registry)."""
