#!/usr/bin/env python3
"""Reference decoder for tools/differential.lua. Reads documents from the file named by argv[1]
(each: its byte length on a line, then the bytes) and prints one line per document:
  ok <postfix tokens>   Python's json accepted it; the tokens rebuild the value, typed (see expr)
  err                   Python's json refused it
  surrogate             accepted only thanks to a lone surrogate escape (the Lua decoder refuses those)
  deep                  accepted but nested deeper than 200 (the Lua decoder's documented limit)
  dupnull               a repeated member name whose last value is null (see DuplicateNull)
Strings are decoded as UTF-8 with surrogateescape, so invalid UTF-8 bytes inside strings pass
through as bytes the way the Lua decoder keeps them; NaN and Infinity are refused."""
import json
import sys

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_DEPTH = 200


class Skip(Exception):
    """Python accepted a document the Lua decoder refuses by design; the reason is the line."""


class DuplicateNull(dict):
    """An object where a repeated name's last value is null: Python keeps "null wins", the Lua
    decoder keeps the earlier value (duplicate names are implementation-defined, RFC 8259 4)."""


def pairs_hook(pairs):
    seen = {}
    dup_null = False
    for k, x in pairs:
        if k in seen and x is None:
            dup_null = True
        seen[k] = x
    return DuplicateNull(seen) if dup_null else seen


def refuse_constant(name):
    raise ValueError("not JSON: " + name)


def lua_string(s):
    try:
        b = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise Skip("surrogate")
    return "S:" + b.hex()


def expr(v, depth, out):
    """Appends v in postfix: N T B I:int F:float S:hex, A:n (the last n values), O:n (the last
    n key/value pairs). A stack machine rebuilds it, so nesting depth costs the reader nothing."""
    if v is None:
        out.append("N")
    elif v is True:
        out.append("T")
    elif v is False:
        out.append("B")
    elif isinstance(v, int):
        out.append("I:%d" % v if INT_MIN <= v <= INT_MAX else float_expr(float(v)))
    elif isinstance(v, float):
        out.append(float_expr(v))
    elif isinstance(v, str):
        out.append(lua_string(v))
    elif isinstance(v, list):
        if depth + 1 > MAX_DEPTH:
            raise Skip("deep")
        for x in v:
            expr(x, depth + 1, out)
        out.append("A:%d" % len(v))
    elif isinstance(v, DuplicateNull):
        raise Skip("dupnull")
    elif isinstance(v, dict):
        if depth + 1 > MAX_DEPTH:
            raise Skip("deep")
        n = 0
        for k, x in v.items():
            key = lua_string(k)  # even for a null member: a lone surrogate in its name is refused
            if x is None:
                continue  # the Lua decoder leaves null members out
            out.append(key)
            expr(x, depth + 1, out)
            n += 1
        out.append("O:%d" % n)
    else:
        raise TypeError(type(v))


def float_expr(f):
    if f == float("inf"):
        return "F:1e999"
    if f == float("-inf"):
        return "F:-1e999"
    return "F:" + repr(f)


def main():
    data = open(sys.argv[1], "rb").read()
    pos, out = 0, []
    while pos < len(data):
        nl = data.index(b"\n", pos)
        n = int(data[pos:nl])
        doc = data[nl + 1:nl + 1 + n]
        pos = nl + 1 + n
        try:
            value = json.loads(doc.decode("utf-8", "surrogateescape"), parse_constant=refuse_constant,
                               object_pairs_hook=pairs_hook)
        except (ValueError, RecursionError):
            out.append("err")
            continue
        try:
            tokens = []
            expr(value, 0, tokens)
            out.append("ok " + " ".join(tokens))
        except Skip as why:
            out.append(str(why))
        except RecursionError:
            out.append("deep")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
