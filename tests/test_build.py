"""How gptc was built: gptc.build_info(), the thread count in builds with and
without OpenMP, and setup.py's check of whether the compiler has OpenMP."""
import importlib.util
import os
import shutil
import stat
import warnings

import pytest
import setuptools  # noqa: F401  (first, so that distutils is the copy setuptools ships)
from distutils.ccompiler import new_compiler
from distutils.sysconfig import customize_compiler

import gptc
from gptc import _C

SETUP_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def load_setup_py():
    """setup.py as a module: it calls setup() only when run as __main__."""
    spec = importlib.util.spec_from_file_location("gptc_setup_py", SETUP_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_info_has_the_documented_keys_and_types():
    info = gptc.build_info()
    print(info)
    assert set(info) == {"compiler", "openmp", "openmp_version", "isas_compiled", "sanitize",
                         "isa"}
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["sanitize"], bool)
    if info["openmp"]:
        # _OPENMP is the yyyymm date of the spec; 4.5 (201511) is GCC's since GCC 6
        assert isinstance(info["openmp_version"], int) and info["openmp_version"] >= 200505
    else:
        assert info["openmp_version"] is None
    assert isinstance(info["isas_compiled"], list)
    assert all(isinstance(name, str) for name in info["isas_compiled"])
    assert info["isas_compiled"][0] == "generic"
    assert len(set(info["isas_compiled"])) == len(info["isas_compiled"])


def test_the_kernel_set_in_use_is_one_compiled_in():
    info = gptc.build_info()
    assert info["isa"] == _C.isa()
    assert info["isa"] in info["isas_compiled"]


def test_build_info_is_a_new_dict_each_call():
    first = gptc.build_info()
    first["isas_compiled"].append("changed")
    assert "changed" not in gptc.build_info()["isas_compiled"]


@pytest.fixture
def restore_num_threads():
    before = gptc.get_num_threads()
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gptc.set_num_threads(before)


def test_two_threads_are_used_with_openmp_and_one_without(restore_num_threads):
    """With OpenMP get_num_threads() returns what was set; a serial build stays
    on one thread and says so with a RuntimeWarning instead of silently."""
    if gptc.build_info()["openmp"]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gptc.set_num_threads(2)
        assert gptc.get_num_threads() == 2
        gptc.set_num_threads(1)
        assert gptc.get_num_threads() == 1
    else:
        with pytest.warns(RuntimeWarning, match=r"set_num_threads\(2\) has no effect"):
            gptc.set_num_threads(2)
        assert gptc.get_num_threads() == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gptc.set_num_threads(1)   # what a serial build does anyway: no warning
        assert gptc.get_num_threads() == 1


def test_a_serial_build_still_checks_the_thread_count(restore_num_threads):
    with pytest.raises(ValueError, match="num_threads must be in"):
        gptc.set_num_threads(0)


def write_compiler(path, real_cc, refuse):
    """A compiler command that runs real_cc but fails where `refuse` says:
    "flag" rejects -fopenmp everywhere (Apple's clang), "link" compiles with
    it but cannot link it (no OpenMP runtime library, Debian's clang without
    libomp)."""
    if refuse == "flag":
        failing = 'if [ "$openmp" = 1 ]; then'
    else:
        failing = 'if [ "$openmp" = 1 ] && [ "$compile_only" = 0 ]; then'
    path.write_text(f"""#!/bin/sh
openmp=0
compile_only=0
for arg in "$@"; do
    [ "$arg" = -fopenmp ] && openmp=1
    [ "$arg" = -c ] && compile_only=1
done
{failing}
    echo "fake compiler: no OpenMP here" >&2
    exit 1
fi
exec {real_cc} "$@"
""")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def compiler_from_cc(cc, monkeypatch):
    """A distutils compiler set up from CC, as setup.py's build gets it."""
    monkeypatch.setenv("CC", cc)
    monkeypatch.delenv("LDSHARED", raising=False)
    compiler = new_compiler()
    customize_compiler(compiler)
    return compiler


@pytest.fixture(scope="module")
def gcc():
    path = shutil.which("gcc")
    if path is None:
        pytest.skip("gcc is not installed")
    return path


def test_openmp_detection_accepts_gcc(gcc, monkeypatch):
    """The positive control of the next test: gcc with libgomp has OpenMP."""
    assert load_setup_py().compiler_has_openmp(compiler_from_cc(gcc, monkeypatch))


@pytest.mark.parametrize("refuse", ["flag", "link"])
def test_openmp_detection_rejects_a_compiler_without_it(refuse, gcc, tmp_path, monkeypatch):
    cc = write_compiler(tmp_path / "cc-without-openmp", gcc, refuse)
    compiler = compiler_from_cc(cc, monkeypatch)
    assert compiler.compiler_so[0] == cc
    assert not load_setup_py().compiler_has_openmp(compiler)


@pytest.mark.parametrize("value, wanted", [(None, True), ("", True), ("0", False)])
def test_gptc_openmp_zero_asks_for_a_serial_build(value, wanted, monkeypatch):
    if value is None:
        monkeypatch.delenv("GPTC_OPENMP", raising=False)
    else:
        monkeypatch.setenv("GPTC_OPENMP", value)
    assert load_setup_py().openmp_wanted() is wanted


def test_gptc_openmp_other_values_are_refused_naming_the_value(monkeypatch):
    monkeypatch.setenv("GPTC_OPENMP", "yes")
    with pytest.raises(SystemExit, match="GPTC_OPENMP must be 0 .* got 'yes'"):
        load_setup_py().openmp_wanted()
