"""VHD inside LVs: reading (reader; the dynamic header, BAT, batmap and locators: dynamic),
validation (checks), repairs into exports (repair),
differencing chains (chain), exports (export) and a producer-faithful builder (build).

Structures live in core.structs.vhd; formats.md section 4 has the facts and their sources.
"""
