"""A lean torch trainer for the four one-step distillation recipes."""
