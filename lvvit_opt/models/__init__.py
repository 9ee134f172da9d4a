"""The models: the LV-ViT definition, the zoo of names (LV-ViT and timm), checkpoint loading,
the preprocessing metadata an export records, and the timm registry hook. Imports core only;
torch is imported by the functions that need it."""
