"""hodr: log-based disaster-recovery replication for databases, integrated with Pacemaker."""

__version__ = "0.1.0"
