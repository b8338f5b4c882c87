"""The four distillation recipes, one module and one YAML per paper, and the contract they share."""
