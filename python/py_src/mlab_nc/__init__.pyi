from ._native import Accumulator as Accumulator
from ._native import __version__ as __version__
from ._native import measure as measure
from ._native import predict as predict
from ._native import ufm as ufm
