"""The base of fastgrad.vision's datasets, as torchvision's VisionDataset."""

import os

from ...data import Dataset


class VisionDataset(Dataset):
    def __init__(self, root, transform=None, target_transform=None):
        if isinstance(root, (str, os.PathLike)):
            root = os.path.expanduser(os.fspath(root))
        self.root = root
        self.transform = transform
        self.target_transform = target_transform

    def apply(self, img, target):
        """The sample after ``transform`` and ``target_transform``."""
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"Number of datapoints: {len(self)}", f"Root location: {self.root}"]
        lines += [line for line in self.extra_repr().splitlines() if line]
        if self.transform is not None:
            lines.append("StandardTransform")
            lines.append(f"Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"Target transform: {self.target_transform!r}")
        return "\n".join([f"Dataset {type(self).__name__}"] + ["    " + line for line in lines])


def missing_files_error(name, files, folders, download):
    """The error for dataset files not found: which files, and the folders searched."""
    searched = ", ".join(folders)
    hint = (
        "fastgrad does not download datasets (download=True only checks that they are there): place "
        if download
        else "place "
    )
    return FileNotFoundError(
        f"{name}: dataset files not found: {', '.join(files)} (searched {searched}); "
        f"{hint}{', '.join(files)} in {folders[0]}"
    )
