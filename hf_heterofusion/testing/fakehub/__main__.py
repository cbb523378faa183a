# SPDX-License-Identifier: Apache-2.0
"""`python -m hf_heterofusion.testing.fakehub --port 8765 --data DIR --token NAME=TOKEN`: serve the fake Hub."""

import sys

from hf_heterofusion.testing.fakehub import main


sys.exit(main())
