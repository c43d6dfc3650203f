"""torch.hub entry points of the ghn repository.

    meta = torch.hub.load("path/to/ghn", "ghn2", source="local", pretrained=False)   # untrained GHN-2
    meta = torch.hub.load("path/to/ghn", "<registered name>", source="local")        # e.g. "ghn2-cifar10"

One entry point per meta-model of ``ghn/pretrained/registry.yaml`` (the names `ghn models`
prints), generated here so that registering a model needs no code change, plus `ghn2`.
Helpers are underscore-prefixed because torch.hub.list lists every public callable.
"""

from __future__ import annotations

from ghn import hub as _hub
from ghn.config import GHNConfig as _GHNConfig
from ghn.model import GHN as _GHN

dependencies = ["torch", "torch_geometric", "networkx", "safetensors", "huggingface_hub", "yaml"]


def ghn2(pretrained: bool = True, device: str = "cpu", **config_overrides) -> _GHN:
    """GHN-2 meta-model.

    pretrained=True loads the default pretrained meta-model (`ghn.hub.DEFAULT_MODEL`, shipped
    inside the package; a `ghn.hub.MetaModelError` if the installation lacks its files);
    pretrained=False builds an untrained GHN-2, ``GHNConfig.variant("ghn2", **config_overrides)``.
    """
    if pretrained:
        if config_overrides:
            raise TypeError(f"config overrides {sorted(config_overrides)} only apply with pretrained=False")
        return _hub.from_pretrained(_hub.DEFAULT_MODEL, device=device)
    return _GHN(_GHNConfig.variant("ghn2", **config_overrides)).to(device)


def _entry_point(entry: _hub.RegisteredModel):
    def load(pretrained: bool = True, device: str = "cpu") -> _GHN:
        if pretrained:
            return _hub.from_pretrained(entry.name, device=device)
        return _GHN(_hub.load_info(entry.name).config).to(device)  # same architecture, untrained

    load.__name__ = load.__qualname__ = entry.name
    accuracy = ", ".join(f"{k}={v:g}" for k, v in entry.accuracy.items())
    load.__doc__ = (f"{entry.description} ({accuracy or 'no accuracy recorded'}).\n\n"
                    "pretrained=False builds the same architecture untrained.")
    return load


# Registered names are used verbatim (torch.hub looks entry points up with getattr, so
# "ghn2-cifar10" works); `ghn2` keeps its meaning if a registered model is named alike.
for _entry in _hub.list_models():
    globals().setdefault(_entry.name, _entry_point(_entry))
