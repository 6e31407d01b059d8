"""The Once-for-All / ProxylessNAS MobileNet block space."""

from spaces.mobilenet.space import BlockSpec, MobileNetArch, MobileNetSpace

__all__ = ["BlockSpec", "MobileNetArch", "MobileNetSpace"]
