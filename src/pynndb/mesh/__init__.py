"""pynndb.mesh"""

import os

from pynndb import _native

_native.choose(os.path.dirname(os.path.abspath(__file__)), __name__)
