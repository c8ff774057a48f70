"""The results store: where runs live, what their records say, who holds them.

One concept per module:

- ``runs``         the store: one folder per run, every path spelt here; integrity of a completed run
- ``record``       a run's identity (``RunKey``) and its record, parsed and validated when read
- ``atomic``       writing a file so that no reader sees it torn
- ``lease``        who is training a run now, judged on the file system's clock
- ``per_image``    the per-image counts files a record vouches for
- ``predictions``  the stored predicted masks
- ``index``        a table's cells mapped to the runs that fill them
- ``status``       what each cell's runs are doing
- ``verify``       checking every record against its files
- ``manifest``     a signed list of a store's runs, to compare stores
"""

from study.store.record import RunKey
from study.store.runs import Store

__all__ = ["RunKey", "Store"]
