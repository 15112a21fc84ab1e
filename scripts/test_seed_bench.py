#!/usr/bin/env python3
"""Tests of scripts/seed_bench.py without running any program: the parsers against the
programs' real output (captured on this machine: sockperf 3.7, iperf3 3.12, wrk 4.1),
the table and the chart. Run: python3 -m unittest discover -s scripts -p 'test_seed_bench.py'
"""

import json
import os
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed_bench as sb  # noqa: E402

SOCKPERF_PP = """\
sockperf: [Valid Duration] RunTime=0.552 sec; SentMessages=85379; ReceivedMessages=85379
sockperf: \x1b[2;35m====> avg-latency=3.218 (std-dev=35.314)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 3.218 usec
sockperf: \x1b[2;35mTotal 85379 observations\x1b[0m; each percentile contains 853.79 observations
sockperf: ---> <MAX> observation = 6021.260
sockperf: ---> percentile 50.000 =    2.266
sockperf: ---> <MIN> observation =    2.046
"""

SOCKPERF_TP = """\
sockperf: Total of 20837 messages sent in 1.001 sec

sockperf: \x1b[2;35mNOTE: test was performed, using msg-size=64000. For getting maximum throughput consider using --msg-size=1472\x1b[0m
sockperf: Summary: Message Rate is 20821 [msg/sec], Packet Rate is about 916124 [pkt/sec] (44 ip frags / msg)
sockperf: Summary: BandWidth is 1270.813 MBps (10166.504 Mbps)
"""

WRK_OK = """\
Running 1s test @ http://127.0.0.1:53491/615.html
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    59.74us  147.58us   4.20ms   99.09%
    Req/Sec   150.71k     8.51k  162.37k    72.73%
  164567 requests in 1.10s, 138.34MB read
Requests/sec: 149653.03
Transfer/sec:    125.96MB
"""

WRK_NON_2XX = WRK_OK.replace("Requests/sec", "  Non-2xx or 3xx responses: 164567\nRequests/sec")

WRK_NOTHING = """\
Running 1s test @ http://127.0.0.1:57489/615.html
  1 threads and 8 connections
  0 requests in 1.01s, 0.00B read
Requests/sec:      0.00
Transfer/sec:       0.00B
"""

IPERF3 = json.dumps({"start": {}, "end": {"sum_sent": {"bits_per_second": 2.4e10},
                                          "sum_received": {"bits_per_second": 2.379e10}}})


class Parsers(unittest.TestCase):
    def test_sockperf(self):
        self.assertAlmostEqual(sb.parse_sockperf_lat(SOCKPERF_PP), 3.218)
        self.assertAlmostEqual(sb.parse_msg_rate(SOCKPERF_PP), 85379 / 0.552)
        self.assertAlmostEqual(sb.parse_sockperf_bw(SOCKPERF_TP), 1270.813)
        for f in (sb.parse_sockperf_lat, sb.parse_msg_rate):
            with self.assertRaises(sb.CellFailed):
                f(SOCKPERF_TP)
        with self.assertRaises(sb.CellFailed):
            sb.parse_sockperf_bw(SOCKPERF_PP)
        with self.assertRaises(sb.CellFailed):
            sb.parse_msg_rate(SOCKPERF_PP.replace("RunTime=0.552", "RunTime=0.000"))

    def test_iperf3(self):
        self.assertAlmostEqual(sb.parse_iperf3("noise\n" + IPERF3 + "\n"), 2.379e10 / 8e6)
        for bad in ("", "{", '{"end": {}}', '{"end": {"sum_received": null}}'):
            with self.assertRaises(sb.CellFailed):
                sb.parse_iperf3(bad)

    def test_wrk(self):
        self.assertAlmostEqual(sb.parse_wrk(WRK_OK), 149653.03)
        for bad in (WRK_NON_2XX, WRK_NOTHING, "", WRK_OK.replace("Requests/sec", "Req")):
            with self.assertRaises(sb.CellFailed):
                sb.parse_wrk(bad)
        with self.assertRaises(sb.CellFailed):
            sb.parse_wrk(WRK_OK.replace("Transfer", "  Socket errors: connect 0, read 3\nTransfer"))


def result(cells):
    tools = sorted({k.split("/")[0] for k in cells}, key=list(sb.TOOLS).index)
    transports = [t for t in sb.TRANSPORTS if any(k.endswith("/" + t) for k in cells)]
    out = {"tools": tools, "transports": transports, "cells": {}}
    for k, samples in cells.items():
        c = {"samples": samples, "failures": [] if samples else ["x"]}
        if samples:
            c["summary"] = sb.summary(samples)
        out["cells"][k] = c
    return out


class Report(unittest.TestCase):
    def test_summary_is_median_min_max(self):
        self.assertEqual(sb.summary([3.0, 1.0, 2.0, 10.0, 5.0]),
                         {"median": 3.0, "min": 1.0, "max": 10.0, "n": 5})

    def test_table_ratios_and_failures(self):
        r = result({"sockperf-bw/tcp": [100.0, 200.0, 300.0],
                    "sockperf-bw/lpar": [250.0, 350.0, 450.0],
                    "sockperf-lat/tcp": [10.0],
                    "sockperf-lat/lpar": []})
        t = sb.table(r)
        self.assertIn("| sockperf-bw (MB/s) | 200.0 [100.0–300.0] | 350.0 [250.0–450.0] **1.75×**", t)
        self.assertIn("1.67× / 1.67×", t)
        self.assertIn("≥ 3.0×", t)
        self.assertIn("| sockperf-lat (us) | 10.0 [10.0–10.0] | failed |", t)
        self.assertIn("≤ 0.2×", t)

    def test_svg_is_well_formed_and_draws_latency_inverted(self):
        r = result({"sockperf-lat/tcp": [10.0], "sockperf-lat/lo": [2.0],
                    "iperf3/tcp": [100.0], "iperf3/lo": [150.0]})
        doc = ET.fromstring(sb.svg(r))
        labels = [e.text for e in doc.iter("{http://www.w3.org/2000/svg}text")]
        self.assertIn("5.00", labels)  # latency: TCP 10 / SMC-D 2
        self.assertIn("1.50", labels)


if __name__ == "__main__":
    unittest.main()
