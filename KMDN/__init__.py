"""KMDN: head and tail models, knowledge mutual distillation, and the distilled tail model CDTG uses."""
