//! The example binaries' command lines: `--help` prints the usage on
//! stdout and exits 0 (it printed on stderr with status 2, as a bad
//! argument does, so `--help | less` showed nothing); a bad argument
//! says what was wrong, with the usage, on stderr, and exits 2.

use std::process::Command;

#[test]
fn help_is_a_success_on_stdout_and_a_bad_argument_an_error_on_stderr() {
    for (name, bin) in [
        ("echo", env!("CARGO_BIN_EXE_echo")),
        ("http_service", env!("CARGO_BIN_EXE_http_service")),
        ("axum_service", env!("CARGO_BIN_EXE_axum_service")),
        ("workqueues", env!("CARGO_BIN_EXE_workqueues")),
        ("wq-dump", env!("CARGO_BIN_EXE_wq-dump")),
        ("wq-monitor", env!("CARGO_BIN_EXE_wq-monitor")),
    ] {
        let help = Command::new(bin).arg("--help").output().unwrap();
        let out = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} --help: {:?}", help.status);
        assert!(
            out.starts_with(&format!("usage: {name}")),
            "{name} --help printed {out:?}"
        );
        let bad = Command::new(bin).arg("--bogus").output().unwrap();
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{name} --bogus: {err}");
        assert!(
            err.contains("--bogus") && err.contains("usage:"),
            "{name} --bogus said {err:?}"
        );
    }
    // The service's synopsis names its dashboard option too.
    let help = Command::new(env!("CARGO_BIN_EXE_http_service"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("[--dashboard-addr ADDR|off]"));
}
