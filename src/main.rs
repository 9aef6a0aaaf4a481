//! The `scanhop` command line: parse, load settings, dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scanhop::app::{Application, termination_signal};
use scanhop::config::Settings;
use scanhop::domain::TokenType;
use scanhop::ids::{LinkId, TokenId, WorkspaceId};
use scanhop::store::Store;
use scanhop::{accounts, domain};

#[global_allocator]
static ALLOCATOR: scanhop::memory::Allocator = scanhop::memory::Allocator {};

#[derive(Parser)]
#[command(
    name = "scanhop",
    version,
    about = "Dynamic QR codes and short links with privacy-preserving scan analytics"
)]
struct Cli {
    /// A config file layered over the built-in defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a link's QR code (SVG or PNG) to stdout, e.g. `> code.png`.
    Qr(QrArgs),
    /// Write a workspace's scan events to stdout, oldest first, as NDJSON or
    /// CSV: the bytes `GET /v1/events/export` answers for the same filters.
    Export(ExportArgs),
    /// Delete the scan events past their workspace's retention now, in every
    /// workspace, and print what was deleted (the server does this on its
    /// own every retention.purge_interval_ms). Needs the server stopped.
    Purge {
        /// Count what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Purge as if it were this time (RFC 3339), for tests and to preview
        /// a later cut-off with --dry-run; defaults to now.
        #[arg(long, hide = true, value_name = "RFC3339")]
        now: Option<String>,
    },
    /// Rewrite the store with its live data only, so deleted events leave no
    /// byte behind in its files, and print its size before and after. Needs
    /// the server stopped.
    Compact,
}

/// The filters of `GET /v1/events/export`, with the same checks.
#[derive(clap::Args)]
struct ExportArgs {
    /// The workspace's ID (ws_...) or name.
    #[arg(long)]
    workspace: String,
    /// ndjson (default) or csv.
    #[arg(long)]
    format: Option<String>,
    /// Only events at or after this time, RFC 3339.
    #[arg(long)]
    from: Option<String>,
    /// Only events before this time, RFC 3339.
    #[arg(long)]
    to: Option<String>,
    /// Only events of this link (lnk_...).
    #[arg(long)]
    link: Option<String>,
    /// Include bots and link previewers.
    #[arg(long)]
    include_bots: bool,
}

/// The options of `GET /v1/links/{id}/qr`, with the same defaults and checks.
#[derive(clap::Args)]
struct QrArgs {
    /// The link's ID (lnk_...) or its slug.
    link: String,
    /// svg (default) or png.
    #[arg(long)]
    format: Option<String>,
    /// Width and height in pixels, 64 to 4096 (default 512).
    #[arg(long)]
    size: Option<String>,
    /// Quiet zone in modules, 2 to 16 (default 4).
    #[arg(long)]
    margin: Option<String>,
    /// Error correction: L, M (default), Q or H.
    #[arg(long)]
    ecc: Option<String>,
    /// Dark module colour, 6 hex digits (default 000000).
    #[arg(long)]
    fg: Option<String>,
    /// Background colour, 6 hex digits (default ffffff).
    #[arg(long)]
    bg: Option<String>,
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace and print its first secret token.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        plan: Option<String>,
    },
    /// List workspaces: ID, name, plan, retention in days, creation time.
    List,
    /// Move a workspace to another plan, which sets its API rate limit and
    /// how long its scan events are kept.
    SetPlan {
        /// The workspace's ID (ws_...) or its name.
        workspace: String,
        /// One of the plans under [plans] in the config.
        #[arg(long)]
        plan: String,
        /// Days its scan events are kept: required with --plan enterprise
        /// (whose retention is per workspace), refused with any other plan
        /// (whose retention is the config's).
        #[arg(long)]
        retention_days: Option<u32>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown only once).
    Create {
        #[arg(long)]
        workspace: String,
        /// secret (sk_) or publishable (pk_).
        #[arg(long, default_value = "secret")]
        kind: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List a workspace's tokens.
    List {
        #[arg(long)]
        workspace: String,
    },
    /// Revoke a token by its ID (tok_...).
    Revoke { id: String },
}

fn main() -> ExitCode {
    scanhop::memory::configure();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scanhop: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::CheckConfig => {
            println!(
                "configuration is valid (store: {}, bind: {})",
                settings.storage.path.display(),
                settings.server.bind
            );
            Ok(())
        }
        Command::Workspace(cmd) => workspace(&settings, cmd),
        Command::Token(cmd) => token(&settings, cmd),
        Command::Qr(args) => qr(&settings, &args),
        Command::Export(args) => export(&settings, args),
        Command::Purge { dry_run, now } => purge(settings, dry_run, now.as_deref()),
        Command::Compact => compact(&settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scanhop: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn serve(settings: Settings) -> CliResult {
    // Logs go to stderr from a background writer (`scanhop::logging`).
    let _log_guard = scanhop::logging::init(&settings.log, std::io::stderr())
        .map_err(|e| -> Box<dyn std::error::Error> { e })?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        if let Some(token) = app.first_token() {
            println!("Created workspace `default`. Its secret API token (shown once, store it now):\n\n    {token}\n");
        }
        println!("scanhop listening on http://{}:{}", app.settings().server.bind.ip(), app.port());
        tracing::info!(port = app.port(), durability = ?app.settings().storage.durability, "scanhop listening");
        app.run_until(termination_signal()).await?;
        Ok(())
    })
}

fn open_store(settings: &Settings) -> Result<Store, Box<dyn std::error::Error>> {
    Ok(Store::open(
        &settings.storage.path,
        settings.storage.cache_capacity_mb,
    )?)
}

fn workspace(settings: &Settings, cmd: WorkspaceCommand) -> CliResult {
    let store = open_store(settings)?;
    match cmd {
        WorkspaceCommand::Create { name, plan } => {
            let (ws, token) = accounts::create_workspace(&store, settings, &name, plan.as_deref())?;
            eprintln!(
                "Created workspace {} ({}) on plan {}. Its secret API token (shown once):",
                ws.id, ws.name, ws.plan
            );
            println!("{}", token.expose());
        }
        WorkspaceCommand::List => {
            for ws in store.workspaces()? {
                let days = settings.retention_days(&ws.plan, ws.retention_days);
                println!(
                    "{}\t{}\t{}\t{days} days\t{}",
                    ws.id, ws.name, ws.plan, ws.created_at
                );
            }
        }
        WorkspaceCommand::SetPlan {
            workspace,
            plan,
            retention_days,
        } => {
            let ws = accounts::set_plan(&store, settings, &workspace, &plan, retention_days)?;
            println!(
                "Workspace {} ({}) is now on plan {}: scan events are kept {} days.",
                ws.id,
                ws.name,
                ws.plan,
                settings.retention_days(&ws.plan, ws.retention_days)
            );
        }
    }
    store.flush()?;
    Ok(())
}

fn token(settings: &Settings, cmd: TokenCommand) -> CliResult {
    let store = open_store(settings)?;
    match cmd {
        TokenCommand::Create {
            workspace,
            kind,
            name,
        } => {
            let ws: WorkspaceId = workspace.parse().map_err(|e| format!("--workspace: {e}"))?;
            store.workspace(&ws)?.ok_or("no such workspace")?;
            let kind = TokenType::parse(&kind).ok_or("--kind must be secret or publishable")?;
            let (token, secret) = accounts::issue_token(&store, ws, kind, name)?;
            eprintln!("Created token {} (shown once):", token.id);
            println!("{}", secret.expose());
        }
        TokenCommand::List { workspace } => {
            let ws: WorkspaceId = workspace.parse().map_err(|e| format!("--workspace: {e}"))?;
            for t in store.tokens(&ws)? {
                let state = t
                    .revoked_at
                    .map_or("active".to_owned(), |at| format!("revoked {at}"));
                let kind = if t.kind == domain::TokenType::Secret {
                    "secret"
                } else {
                    "publishable"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.id,
                    kind,
                    t.hint,
                    t.name.unwrap_or_default(),
                    state
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let id: TokenId = id.parse().map_err(|e| format!("token id: {e}"))?;
            let ws = store.token_workspace(&id)?.ok_or("no such token")?;
            store.revoke_token(&ws, &id, domain::Timestamp::now())?;
            println!("revoked {id}");
        }
    }
    store.flush()?;
    Ok(())
}

fn qr(settings: &Settings, args: &QrArgs) -> CliResult {
    use std::io::Write as _;
    let options = scanhop::qr::QrOptions::parse(scanhop::qr::RawOptions {
        format: args.format.as_deref(),
        size: args.size.as_deref(),
        margin: args.margin.as_deref(),
        ecc: args.ecc.as_deref(),
        fg: args.fg.as_deref(),
        bg: args.bg.as_deref(),
    })?;
    let store = open_store(settings)?;
    // An ID is tried first: a slug may only spell a link ID on purpose, and
    // then the ID is the likelier meaning.
    let by_id = match args.link.parse::<LinkId>() {
        Ok(id) => store.link_in_any_workspace(&id)?,
        Err(_) => None,
    };
    let link = match by_id {
        Some(link) => link,
        None => store
            .link_by_slug(&args.link)?
            .ok_or_else(|| format!("no link with the ID or slug `{}`", args.link))?,
    };
    let text = settings.short_url(link.slug.as_str());
    let (bytes, _) = scanhop::qr::render(&text, &options)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

fn export(settings: &Settings, args: ExportArgs) -> CliResult {
    use std::io::{IsTerminal as _, Write as _};

    use scanhop::export::{ExportFormat, ExportWalk};
    use scanhop::http::api::events::EventFilters;

    let format = match args.format.as_deref() {
        None => ExportFormat::default(),
        Some(f) => ExportFormat::parse(f).ok_or("--format must be ndjson or csv")?,
    };
    let store = open_store(settings)?;
    let ws = scanhop::accounts::find_workspace(&store, &args.workspace)
        .map_err(|e| format!("--workspace: {e}"))?;
    let filters = EventFilters {
        link_id: args.link,
        from: args.from,
        to: args.to,
        include_bots: args.include_bots.then(|| "true".to_owned()),
        ..EventFilters::default()
    };
    // The API's own checks, so both refuse the same filters; the messages
    // name the query parameters, which are options here.
    let parsed = filters.parse(ws.id).map_err(|e| {
        [("link_id", "--link"), ("from", "--from"), ("to", "--to")]
            .iter()
            .fold(e.detail().to_owned(), |msg, (param, option)| {
                msg.replace(&format!("`{param}`"), option)
            })
    })?;
    let mut walk = ExportWalk::start(store, parsed.query, parsed.link_filter, format)?;
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(walk.candidates()?);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events examined, {msg}",
        )?;
        bar.set_style(style);
        bar.set_message("0 exported");
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut exported = 0usize;
    let written = (|| -> std::io::Result<()> {
        out.write_all(&format.header())?;
        while let Some(chunk) = walk.next_chunk().map_err(std::io::Error::other)? {
            out.write_all(&chunk.bytes)?;
            exported += chunk.events;
            progress.inc(chunk.examined);
            progress.set_message(format!("{exported} exported"));
        }
        out.flush()
    })();
    progress.finish_and_clear();
    match written {
        // The reader went away (`| head`): what it wanted it has.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => {
            if !progress.is_hidden() {
                eprintln!("Exported {exported} events of workspace {}.", ws.id);
            }
            Ok(())
        }
    }
}

fn purge(settings: Settings, dry_run: bool, now: Option<&str>) -> CliResult {
    use scanhop::actors::purger::{Bound, Purger};
    let now = match now {
        Some(t) => t
            .parse::<domain::Timestamp>()
            .map_err(|e| format!("--now: {e}"))?,
        None => domain::Timestamp::now(),
    };
    let store = open_store(&settings)?;
    let metrics = std::sync::Arc::new(scanhop::metrics::Metrics::default());
    let mut purger = Purger::new(store.clone(), settings, Bound::EveryRecord, metrics);
    let pass = purger.pass(now, dry_run, None)?;
    store.flush()?;
    if let Some(consumer) = &pass.held_by {
        println!(
            "Nothing {}: the consumer `{consumer}` has not stored a position yet, so every event may still be waiting for it.",
            if dry_run {
                "would be deleted"
            } else {
                "deleted"
            }
        );
        return Ok(());
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for w in &pass.workspaces {
        let r = &w.report;
        let split = if dry_run {
            String::new()
        } else {
            format!(
                " ({} rewritten, {} removed)",
                r.segments_rewritten, r.segments_removed
            )
        };
        println!(
            "{}\t{}\t{}\t{} days\tbefore {}\t{verb} {} events ({} scans) from {} segments{split}",
            w.workspace.id,
            w.workspace.name,
            w.workspace.plan,
            w.retention_days,
            w.cutoff,
            r.events,
            r.scans,
            r.segments()
        );
    }
    let total = pass.total();
    println!(
        "total\t{verb} {} events ({} scans) from {} segments",
        total.events,
        total.scans,
        total.segments()
    );
    if let Some(up_to) = pass.up_to
        && !pass.consumers.is_empty()
        && pass
            .workspaces
            .iter()
            .any(|w| up_to.timestamp_ms() < w.cutoff.as_millis())
    {
        println!(
            "Events after {up_to} are kept for now: the consumers ({}) have not processed them yet.",
            pass.consumers.join(", ")
        );
    }
    if !dry_run && total.events > 0 {
        println!(
            "The deleted events' bytes may remain in the store's files until `scanhop compact`."
        );
    }
    Ok(())
}

fn compact(settings: &Settings) -> CliResult {
    let path = &settings.storage.path;
    let report = scanhop::store::compact(path, settings.storage.cache_capacity_mb)?;
    println!(
        "Compacted the store at {}: {} bytes before, {} bytes after ({} entries in {} trees).",
        path.display(),
        report.before_bytes,
        report.after_bytes,
        report.entries,
        report.trees
    );
    Ok(())
}
