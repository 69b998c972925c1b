"""autotransfer's first-party plugins, loaded through the ``autotransfer`` entry points."""
