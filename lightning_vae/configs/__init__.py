"""The YAML configs shipped with the package: LightningCLI configs at the top, the Hydra tree in the groups.

Hydra finds them as ``pkg://lightning_vae.configs``; ``lightning-vae fit --config shapes`` by short name;
``lightning-vae configs --copy DIR`` copies them for editing.
"""
