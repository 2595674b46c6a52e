"""`nnrun sweep`: the variants of one config (`variants`), grouped by compiled shape and
trained as one vmapped program per group (`program`), each variant's run directory
(`rundirs`), and the sweep end to end with its tables (`run`).

Sits above the API: may import every wing but cli/.
"""
