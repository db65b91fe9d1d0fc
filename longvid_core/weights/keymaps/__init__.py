"""Key maps between checkpoint file layouts and the models LongVid builds (one file per format component)."""
