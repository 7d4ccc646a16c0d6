"""vlm2geovec training (installed as `vlm2geovec_train`): losses, data, recipes."""
