//! `member add|remove|update|promote|list`, as etcdctl 3.4 runs them (etcd-io/etcd v3.4
//! `member_command.go`, clientv3 `cluster.go`).
//!
//! Member IDs are hex on the command line (`strconv.ParseUint(id, 16, 64)`), peer URLs are
//! checked before anything is sent as clientv3 checks them (`gourl`), and `member add` in the
//! simple format also prints the `ETCD_*` settings the new member starts with. Argument errors
//! exit 128, failed requests 1.

use super::cli::MemberCommand;
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::gofmt::quote;
use super::goparse::parse_uint;
use super::gourl::check_urls;
use super::printer::{write_error, Change};
use super::{Ctx, Io};
use crate::pb;

pub async fn member(ctx: &Ctx, command: MemberCommand, io: &mut Io<'_>) -> Result<(), CtlError> {
    match command {
        MemberCommand::List => {
            let printer = ctx.printer()?;
            let response = ctx.client()?.member_list(ctx.deadline()).await?;
            printer.print(io.out, &response)
        }
        MemberCommand::Add { peer_urls, learner, args } => add(ctx, &peer_urls, learner, &args, io).await,
        MemberCommand::Remove { args } => {
            let id = member_id(&args)?;
            let printer = ctx.printer()?;
            let response = ctx.client()?.member_remove(ctx.deadline(), id).await?;
            printer.print_change(io.out, &Change::MemberRemoved(id, response))
        }
        MemberCommand::Update { peer_urls, args } => {
            let id = member_id(&args)?;
            let urls = peer_url_list(&peer_urls)?;
            let printer = ctx.printer()?;
            let mut client = ctx.client()?;
            check_urls(&urls).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
            let request = pb::MemberUpdateRequest { id, peer_ur_ls: urls };
            let response = client.member_update(ctx.deadline(), request).await?;
            printer.print_change(io.out, &Change::MemberUpdated(id, response))
        }
        MemberCommand::Promote { args } => {
            let id = member_id(&args)?;
            let printer = ctx.printer()?;
            let response = ctx.client()?.member_promote(ctx.deadline(), id).await?;
            printer.print_change(io.out, &Change::MemberPromoted(id, response))
        }
    }
}

async fn add(ctx: &Ctx, peer_urls: &str, learner: bool, args: &[String], io: &mut Io<'_>) -> Result<(), CtlError> {
    let name = match args {
        [] => return Err(CtlError::new(EXIT_BAD_ARGS, "member name not provided")),
        [name] => name,
        _ => return Err(CtlError::new(EXIT_BAD_ARGS, too_many_arguments(args))),
    };
    let urls = peer_url_list(peer_urls)?;
    let printer = ctx.printer()?;
    let mut client = ctx.client()?;
    check_urls(&urls).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
    let request = pb::MemberAddRequest { peer_ur_ls: urls, is_learner: learner };
    let response = client.member_add(ctx.deadline(), request).await?;
    let settings = start_settings(name, peer_urls, &response);
    printer.print_change(io.out, &Change::MemberAdded(response))?;
    if printer.is_simple() {
        io.out.write_all(settings.as_bytes()).map_err(write_error)?;
    }
    Ok(())
}

/// etcdctl's refusal of extra arguments, with a hint for each that looks like a URL.
fn too_many_arguments(args: &[String]) -> String {
    let hints = args.iter().filter(|arg| arg.to_lowercase().starts_with("http"));
    hints.fold("too many arguments".to_string(), |message, url| message + &format!(", did you mean --peer-urls={url}"))
}

/// `--peer-urls` split at commas, as etcdctl splits it (no trimming).
fn peer_url_list(peer_urls: &str) -> Result<Vec<String>, CtlError> {
    if peer_urls.is_empty() {
        return Err(CtlError::new(EXIT_BAD_ARGS, "member peer urls not provided"));
    }
    Ok(peer_urls.split(',').map(str::to_string).collect())
}

/// The one `<memberID>` argument, in hex.
fn member_id(args: &[String]) -> Result<u64, CtlError> {
    let [id] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "member ID is not provided"));
    };
    parse_uint(id, 16)
        .map_err(|e| CtlError::new(EXIT_BAD_ARGS, format!("bad member ID arg ({e}), expecting ID in Hex")))
}

/// What the new member is started with, after a blank line: its name, every member's peer URLs
/// (the new member under its given name, since it has none yet) in the order of the answer,
/// its own peer URLs as given, and the `existing` cluster state.
fn start_settings(name: &str, peer_urls: &str, response: &pb::MemberAddResponse) -> String {
    let new_id = response.member.as_ref().map(|m| m.id);
    let cluster: Vec<String> = response
        .members
        .iter()
        .flat_map(|m| {
            let member_name = if Some(m.id) == new_id { name } else { m.name.as_str() };
            m.peer_ur_ls.iter().map(move |url| format!("{member_name}={url}"))
        })
        .collect();
    format!(
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        quote(name.as_bytes()),
        quote(cluster.join(",").as_bytes()),
        quote(peer_urls.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: CtlError) -> (u8, String) {
        (error.code, error.message.unwrap_or_default())
    }

    #[test]
    fn member_ids_are_hex() {
        assert_eq!(member_id(&["8e9e05c52164694d".into()]), Ok(0x8e9e05c52164694d));
        assert_eq!(
            message(member_id(&["zz".into()]).unwrap_err()),
            (
                EXIT_BAD_ARGS,
                r#"bad member ID arg (strconv.ParseUint: parsing "zz": invalid syntax), expecting ID in Hex"#.into()
            )
        );
        assert_eq!(message(member_id(&[]).unwrap_err()), (EXIT_BAD_ARGS, "member ID is not provided".into()));
    }

    #[test]
    fn extra_arguments_that_look_like_urls_get_a_hint() {
        let args = ["x".to_string(), "y".into(), "http://a".into(), "HTTP://b".into()];
        assert_eq!(
            too_many_arguments(&args),
            "too many arguments, did you mean --peer-urls=http://a, did you mean --peer-urls=HTTP://b"
        );
    }

    #[test]
    fn settings_name_the_new_member_and_keep_the_answers_order() {
        let new = pb::Member { id: 0x31, peer_ur_ls: vec!["http://127.0.0.1:42380".into()], ..Default::default() };
        let old = pb::Member {
            id: 0xec,
            name: "n1".into(),
            peer_ur_ls: vec!["http://127.0.0.1:41380".into()],
            ..Default::default()
        };
        let response = pb::MemberAddResponse { header: None, member: Some(new.clone()), members: vec![new, old] };
        assert_eq!(
            start_settings("n2", "http://127.0.0.1:42380", &response),
            "\nETCD_NAME=\"n2\"\nETCD_INITIAL_CLUSTER=\"n2=http://127.0.0.1:42380,n1=http://127.0.0.1:41380\"\n\
             ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.1:42380\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
        );
    }
}
