//! A throwaway Postgres cluster with `wal_level=logical`, started from the machine's own server
//! binaries: what `realtime dev` runs when no database is given, and what tests and benchmarks
//! start for themselves.
//!
//! It owns its data folder and its server process. Dropping it stops the server; a temporary data
//! folder is removed with it.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The superuser's password inside embedded clusters. They listen on loopback only.
pub const SUPERUSER_PASSWORD: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no Postgres server binaries found (looked at $PG_BINDIR, `pg_config --bindir` and /usr/lib/postgresql/*/bin); install them with `apt-get install postgresql`"
    )]
    NoBinaries,
    /// `what` is the step, worded to follow "cannot" ("create the data folder").
    #[error("cannot {what}")]
    Io { what: String, source: std::io::Error },
    #[error("`{command}` failed with {status}: {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("Postgres did not accept connections within {0:?}; see its log at {1}")]
    NotReady(Duration, PathBuf),
}

/// How to start an embedded cluster.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Data folder to use (created and initialised when missing). `None`: a fresh temporary one,
    /// removed on drop.
    pub data_dir: Option<PathBuf>,
    /// TCP port on 127.0.0.1. `None`: a free one.
    pub port: Option<u16>,
    /// Extra `postgresql.conf` settings, on top of the logical-replication defaults.
    pub settings: Vec<(String, String)>,
}

impl Options {
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A running (or stopped) embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bindir: PathBuf,
    data_dir: PathBuf,
    /// Removed on drop when the cluster lives in a temporary folder.
    temp_root: Option<PathBuf>,
    port: u16,
    settings: Vec<(String, String)>,
    running: bool,
}

impl EmbeddedPostgres {
    /// Initialises the data folder if needed and starts the server.
    pub fn start(options: Options) -> Result<Self, EmbeddedError> {
        let bindir = find_bindir().ok_or(EmbeddedError::NoBinaries)?;
        let (data_dir, temp_root) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let root = temp_folder()?;
                (root.join("data"), Some(root))
            }
        };
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut pg = EmbeddedPostgres {
            bindir,
            data_dir,
            temp_root,
            port,
            settings: default_settings(),
            running: false,
        };
        pg.settings.extend(options.settings);
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.copy_template()?;
        }
        pg.write_settings()?;
        pg.start_server()?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    /// A connection URL for `database` as the superuser (password included: loopback only).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs `psql -c` as the superuser; handy for setup that must not go through the code under test.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, EmbeddedError> {
        let out = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// Stops the server: `fast` disconnects clients cleanly, `immediate` is a crash.
    pub fn stop(&mut self, mode: StopMode) -> Result<(), EmbeddedError> {
        if !self.running {
            return Ok(());
        }
        let data = self.data_dir.to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", mode.as_str(), "-w", "-t", "60", "stop"],
        )?;
        self.running = false;
        Ok(())
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.stop(StopMode::Fast)?;
        self.start_server()
    }

    pub fn start_again(&mut self) -> Result<(), EmbeddedError> {
        if self.running { Ok(()) } else { self.start_server() }
    }

    /// Fills a new data folder with a copy of one initialised once per set of server binaries:
    /// copying takes a tenth of what `initdb` does, and test suites start hundreds of clusters.
    /// Copies share the template's system identifier, which only matters to a service that
    /// moves between clusters (it then starts a new epoch: see `replication::setup`).
    fn copy_template(&self) -> Result<(), EmbeddedError> {
        let key: String = self
            .bindir
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let template = std::env::temp_dir().join(format!("realtime-pg-template-v1{key}"));
        if !template.join("PG_VERSION").exists() {
            // Initialised aside, then renamed into place: concurrent starts race only on the
            // rename, which fails for all but one; the losers use the winner's template.
            let scratch = temp_folder()?;
            let data = scratch.join("data");
            let result = self.initdb(&data);
            if result.is_ok() {
                let _ = std::fs::rename(&data, &template);
            }
            let _ = std::fs::remove_dir_all(&scratch);
            result?;
        }
        std::fs::create_dir_all(&self.data_dir).map_err(io("create the data folder"))?;
        // Postgres refuses a data folder others can read.
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restrict the data folder"))?;
        chown_to_postgres(&self.data_dir)?;
        // As the binaries' user, so the copies belong to it.
        self.run_program(
            Path::new("cp"),
            &[
                "-a",
                &format!("{}/.", template.display()),
                &self.data_dir.to_string_lossy(),
            ],
        )
        .map(|_| ())
    }

    fn initdb(&self, data_dir: &Path) -> Result<(), EmbeddedError> {
        std::fs::create_dir_all(data_dir).map_err(io("create the data folder"))?;
        chown_to_postgres(data_dir)?;
        // The password file lives in a folder of its own that the postgres user can read
        // (the data folder's parent may not be open to it).
        let pwdir = temp_folder()?;
        let pwfile = pwdir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).map_err(io("write the password file"))?;
        chown_to_postgres(&pwdir)?;
        let data = data_dir.to_string_lossy().into_owned();
        let result = self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--pwfile",
                &pwfile.to_string_lossy(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        );
        let _ = std::fs::remove_dir_all(&pwdir);
        result.map(|_| ())
    }

    fn write_settings(&self) -> Result<(), EmbeddedError> {
        let mut conf = String::from("# written by realtime's embedded Postgres; rewritten at every start\n");
        for (name, value) in &self.settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        conf.push_str(&format!("port = {}\n", self.port));
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            self.data_dir.display()
        ));
        let path = self.data_dir.join("postgresql.auto.conf");
        std::fs::write(&path, conf).map_err(io("write postgresql.auto.conf"))?;
        chown_to_postgres(&path)
    }

    fn start_server(&mut self) -> Result<(), EmbeddedError> {
        let data = self.data_dir.to_string_lossy().into_owned();
        let log = self.log_file().to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "start"])?;
        self.running = true;
        // std's clock: this blocking loop sleeps the thread while a real server starts, so a
        // paused Tokio clock would never reach the deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(EmbeddedError::NotReady(Duration::from_secs(30), self.log_file()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Runs one of the server binaries, as the `postgres` user when we are root (initdb and the
    /// server refuse to run as root).
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, EmbeddedError> {
        self.run_program(&self.bindir.join(program), args)
    }

    fn run_program(&self, path: &Path, args: &[&str]) -> Result<Output, EmbeddedError> {
        let program = path
            .file_name()
            .map_or_else(|| path.to_string_lossy(), |name| name.to_string_lossy())
            .into_owned();
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command
            .args(args)
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env_remove("PGDATA");
        let out = command.output().map_err(io(&format!("run {program}")))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(EmbeddedError::Command {
                command: program,
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
                .trim()
                .to_owned(),
            })
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // `immediate`: a fast stop can wait a long time for a walsender whose client is gone.
        let _ = self.stop(StopMode::Immediate);
        if let Some(root) = &self.temp_root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

fn default_settings() -> Vec<(String, String)> {
    [
        ("listen_addresses", "127.0.0.1"),
        ("wal_level", "logical"),
        ("max_replication_slots", "20"),
        ("max_wal_senders", "20"),
        // A throwaway cluster: durability buys nothing and costs test time.
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Where the server binaries are: `$PG_BINDIR`, then `pg_config --bindir`, then the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off `PATH`).
pub fn find_bindir() -> Option<PathBuf> {
    let has_initdb = |p: &Path| p.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from)
        && has_initdb(&dir)
    {
        return Some(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| has_initdb(p))
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    // The real uid from /proc (Linux), without unsafe code or a child process.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn chown_to_postgres(path: &Path) -> Result<(), EmbeddedError> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .map_err(io("run chown"))?;
    if status.success() {
        Ok(())
    } else {
        Err(EmbeddedError::Command {
            command: "chown".into(),
            status: status.to_string(),
            output: format!("could not hand {} to the postgres user", path.display()),
        })
    }
}

fn temp_folder() -> Result<PathBuf, EmbeddedError> {
    use rand::Rng;
    let name = format!("realtime-pg-{:016x}", rand::rng().random::<u64>());
    let root = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&root).map_err(io("create a temporary folder"))?;
    // The postgres user must be able to enter it.
    chown_to_postgres(&root)?;
    Ok(root)
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(io("find a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io("find a free port"))
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        what: what.to_owned(),
        source,
    }
}
