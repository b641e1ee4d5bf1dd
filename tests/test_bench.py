"""benchmarks/bench.py runs a case by its number from the case registry and writes
its results under the case's key; unknown case numbers are refused by name. Only
the quickest cases (11, the FMA loop; 7, the bandwidth) run here: figures belong to
the benchmark, never to the tests, so nothing here looks at a time."""
import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks", "bench.py")


def run_bench(*args):
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True,
                          timeout=300)


def test_a_case_run_by_number_prints_its_table_and_stores_its_results(tmp_path):
    out = tmp_path / "results.json"
    proc = run_bench("--quick", "--threads", "1", "--cases", "11", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "11. Arithmetic peak" in proc.stdout
    results = json.loads(out.read_text())
    assert list(results["cases"]) == ["11_fma_peak"]
    import gptc
    peak = results["cases"]["11_fma_peak"]
    assert sorted(peak) == sorted(gptc._C.supported_isas())
    assert all(g > 0 for by_threads in peak.values() for g in by_threads.values())


def test_the_bandwidth_case_reads_with_gptcs_loads_on_each_thread_count(tmp_path):
    """Case 7 measures with gptc._C.read_bandwidth on 1 and --threads threads, and derives
    the decode bound from the better figure and the weight bytes."""
    out = tmp_path / "results.json"
    proc = run_bench("--quick", "--threads", "2", "--cases", "7", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "7. Streaming-read bandwidth" in proc.stdout
    bw = json.loads(out.read_text())["cases"]["7_bandwidth"]
    print(bw["readers"])
    assert sorted(bw["readers"]) == ["1 thread", "2 threads"]
    assert all(g > 0 for g in bw["readers"].values())
    assert bw["bandwidth_gbs"] == max(bw["readers"].values())
    assert abs(bw["decode_bound_tokens_per_s"]
               - bw["bandwidth_gbs"] * 1e9 / bw["weight_bytes_per_token"]) < 1e-6


def test_an_unknown_case_number_is_refused_with_the_numbers_there_are():
    proc = run_bench("--cases", "1,13")
    assert proc.returncode == 2
    print(proc.stderr.strip().splitlines()[-1])
    assert "--cases takes numbers from [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], got [1, 13]" \
        in proc.stderr
