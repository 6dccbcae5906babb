#!/usr/bin/env python3
"""Writes the committed seed corpora from fuzz/corpus/server (real answers of the local server,
one file each: the status on the first line, the body after it) and the edge cases below.
  fuzz/corpus/json/      y_* must decode, n_* must be refused (JSONTestSuite-style, written here)
  fuzz/corpus/response/  the response_fuzz input layout (see fuzz/response_fuzz.c)
Run from the repository root: python3 fuzz/make_seeds.py"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SECRET = b"lm_fuzz_SECRET_key_42"

VALID = {
    "y_empty_object": b"{}", "y_empty_array": b"[]", "y_nested": b'[[[[{"a":[{}]}]]]]',
    "y_int_max": b"9223372036854775807", "y_int_min": b"-9223372036854775808",
    "y_int_over": b"9223372036854775808", "y_int_under": b"-9223372036854775809",
    "y_2p53_plus1": b"9007199254740993", "y_neg_zero": b"-0", "y_neg_zero_float": b"-0.0",
    "y_exp": b"[1e3,1E+3,1e-3,-1.5e-300,2.5E308]", "y_huge_exp": b"[1e999,-1e999]",
    "y_tiny": b"[5e-324,2.2250738585072011e-308,4.9406564584124654e-324]",
    "y_close_to_zero": b"[-0.000000000000000000000000000000000000000000000000000000000000000000000000000001]",
    "y_long_int": b"1" + b"0" * 99, "y_long_fraction": b"1.000000000000000000000000000000000000000000000000000000000000000000001e5",
    "y_long_mantissa": b"0." + b"1" * 80, "y_many_digits_exp": b"123456789012345678901234567890e-10",
    "y_halfway": b"[9007199254740993.0,1.00000000000000011102230246251565404236316680908203125]",
    "y_strings": b'["","\\"","\\\\","\\/","\\b\\f\\n\\r\\t","\\u0000","\\u00e9","\\uffff","\\ud834\\udd1e"]',
    "y_utf8": "[\"é€𝄞\"]".encode(), "y_literals": b"[true,false,null]", "y_null_member": b'{"a":null,"b":1}',
    "y_dup_keys": b'{"a":1,"a":2}', "y_ws": b" \t\r\n[ 1 ,\t2 ]\n", "y_top_string": b'"x"', "y_top_null": b"null",
    "y_key_escapes": b'{"\\u0041\\n":1}', "y_array_nulls": b"[null,null,1,null]",
}
INVALID = {
    "n_empty": b"", "n_ws_only": b"  ", "n_trailing_comma": b"[1,]", "n_obj_trailing_comma": b'{"a":1,}',
    "n_leading_zero": b"01", "n_plus": b"+1", "n_dot_start": b".5", "n_dot_end": b"1.", "n_exp_empty": b"1e",
    "n_exp_sign_only": b"1e+", "n_hex": b"0x10", "n_nan": b"NaN", "n_inf": b"Infinity", "n_neg_inf": b"-Infinity",
    "n_single_quote": b"['a']", "n_unterminated": b'"abc', "n_ctrl_in_string": b'"a\x01b"', "n_tab_in_string": b'"a\tb"',
    "n_bad_escape": b'"\\x41"', "n_lone_high": b'"\\ud800"', "n_lone_low": b'"\\udc00"', "n_bad_pair": b'"\\ud800\\u0041"',
    "n_short_u": b'"\\u12"', "n_trailing": b"[1] x", "n_two_values": b"1 2", "n_unclosed_array": b"[1,2",
    "n_unclosed_object": b'{"a":1', "n_key_not_string": b"{1:2}", "n_missing_colon": b'{"a" 1}', "n_tru": b"tru",
    "n_nul": b"nul", "n_caps": b"TRUE", "n_comment": b"[1]//x", "n_bom": b"\xef\xbb\xbf[]", "n_minus_only": b"-",
    "n_minus_space": b"- 1", "n_deep": b"[" * 300 + b"]" * 300, "n_nul_byte_after": b"[1]\x00",
    "n_html": b"<html><body>502 Bad Gateway</body></html>",
}


def write(folder, name, data):
    os.makedirs(os.path.join(ROOT, folder), exist_ok=True)
    with open(os.path.join(ROOT, folder, name), "wb") as f:
        f.write(data)


def response(shape, status, headers, body, transport=False):
    return bytes([shape | (0x80 if transport else 0)]) + struct.pack(">H", status) + headers + b"\n" + body


def main():
    for name, text in VALID.items():
        write("json", name, text)
    for name, text in INVALID.items():
        write("json", name, text)
    server = os.path.join(ROOT, "server")
    shapes = {"summary": 0, "breakdown": 1, "timeseries": 2, "err": 0}
    for name in sorted(os.listdir(server)):
        with open(os.path.join(server, name), "rb") as f:
            status, _, body = f.read().partition(b"\n")
        write("json", "server_" + name, body)
        write("response", "server_" + name,
              response(shapes[name.split("_")[0]], int(status), b"content-type: application/json\n", body))
    json_ct = b"content-type: application/json\n"
    echo = b'{"error":"key ' + SECRET + b' is bad","detail":{"k":"' + SECRET + b'"}}'
    deep = b'{"error":"x","d":' + b'{"a":' * 25 + b'"' + SECRET + b'"' + b"}" * 25 + b"}"
    cases = {
        "echo_401": response(0, 401, json_ct, echo),
        "echo_deep_400": response(0, 400, json_ct, deep),
        "echo_key_as_key": response(0, 500, json_ct, b'{"error":"e","' + SECRET + b'":1}'),
        "echo_header_429": response(0, 429, b"retry-after: 7\nx-ratelimit-limit: 1000\nx-ratelimit-remaining: 0\n"
                                    b"x-ratelimit-reset: 99\nx-echo: " + SECRET + b"\n", b'{"error":"slow down"}'),
        "redirect_302": response(0, 302, b"location: /v1/usage?k=" + SECRET + b"\n", b'{"error":"moved"}'),
        "html_502": response(0, 502, b"content-type: text/html\n", b"<html><h1>502</h1></html>"),
        "empty_204": response(0, 204, b"", b""), "empty_500": response(0, 500, b"", b""),
        "wrong_shape": response(0, 200, json_ct, b"[1,2,3]"),
        "wrong_rows": response(1, 200, json_ct, b'{"data":[{"dimension":1}]}'),
        "sparse_rows": response(2, 200, json_ct, b'{"data":{"1":{},"5":{}}}'),
        "null_error": response(0, 400, json_ct, b'{"error":null}'),
        "error_number": response(0, 400, json_ct, b'{"error":5}'),
        "status_000": response(0, 0, b"", b"x"), "status_999": response(0, 999, b"", b"{}"),
        "transport_timeout": response(0, 28, b"", b"operation timed out after 100 ms", transport=True),
        "transport_secret": response(0, 7, b"", b"could not connect to user:" + SECRET + b"@host", transport=True),
    }
    for name, data in cases.items():
        write("response", name, data)


if __name__ == "__main__":
    main()
