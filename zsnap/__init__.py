"""zsnap: consistent ZFS snapshot sets of a PostgreSQL standby, and flashback instances."""

__version__ = "0.1.0"

# Where the configuration is looked for (zsnap.config.config_path), named here so that the
# command line's help says it without loading the configuration's machinery.
CONFIG_ENV_VAR = "ZSNAP_CONFIG"
DEFAULT_CONFIG = "/etc/zsnap/zsnap.toml"
