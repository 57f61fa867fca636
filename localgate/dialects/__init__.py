"""Translations between the wire dialects localgate speaks: pure functions, no I/O."""
