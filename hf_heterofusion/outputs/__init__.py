# SPDX-License-Identifier: Apache-2.0
"""What a run leaves behind: the typed report, the output writer, the card, size and memory estimates, --eval,
and the push to the Hub."""
