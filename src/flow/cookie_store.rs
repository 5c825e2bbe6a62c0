//! `session.store: cookie`: the session travels sealed in the browser's cookies,
//! so any replica, or one just restarted, can serve the next request.
//!
//! The rest of the flow stays store-agnostic: it emits the same [`StoreWrite`]s
//! as for shared data, and [`writes_to_cookies`] turns them into `Set-Cookie`
//! headers as each request finishes.

use std::rc::Rc;

use rand_core::CryptoRngCore;

use super::{identity, login, logout, Context, Next, RequestHead, Respond, Step, StoreWrite};
use crate::cache::{self, Digest};
use crate::crypto;
use crate::http::pages;
use crate::session::chunks::Joined;
use crate::session::cookie_codec::{self, Opened, Refused};
use crate::session::deny_list::{DenyList, DenyListRead, DENY_LIST_KEY};
use crate::session::{chunks, Session, SessionKey};

/// What the request brought, for writing the cookies when it finishes.
#[derive(Debug, Default)]
pub(super) struct Jar {
    /// The session cookie names sent: to overwrite or expire.
    names: Vec<String>,
    /// The session they opened to: a touch re-seals it with a new `last_seen`.
    session: Option<Box<Session>>,
}

impl Jar {
    pub(super) fn from_request(config: &crate::config::Config, request: &RequestHead) -> Jar {
        Jar {
            names: chunks::present_names(request.cookies(), &config.cookies.session_name),
            session: None,
        }
    }
}

/// Stands in for the shared-data key in the flow's writes (a browser holds one
/// session), and names the session's refresh claim.
pub(super) fn session_key(session: &Session) -> SessionKey {
    let identity = format!(
        "cookie|{}|{}|{}",
        session.created_at,
        session.sub,
        session.sid.as_deref().unwrap_or_default()
    );
    SessionKey::from_hash(crypto::sha256_b64url(identity.as_bytes()))
}

/// For writes when no session opened.
fn no_session_key() -> SessionKey {
    SessionKey::from_hash("cookie-session".to_string())
}

/// A session cookie that opened, waiting for the deny-list.
#[derive(Debug)]
pub(super) struct Pending {
    request: RequestHead,
    /// The digest of the sealed value: the session's entry in the VM's cache.
    cookie: Digest,
    opened: Rc<Opened>,
    /// The deny-list generation the cached session was last checked at.
    checked_at: Option<u64>,
    logout: bool,
}

pub(super) enum Loaded {
    Done(Step),
    /// Read the deny-list, then [`with_deny_list`].
    CheckDenyList(Box<Pending>, Step),
}

pub(super) fn open_request<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: RequestHead,
    is_logout: bool,
    jar: &mut Jar,
) -> Loaded {
    let base = &ctx.config.cookies.session_name;
    let sealed = match chunks::join(request.cookies(), base) {
        Joined::Sealed(sealed) => sealed,
        Joined::Absent if is_logout => {
            return Loaded::Done(logout::without_session(ctx, &request, None))
        }
        Joined::Absent => return Loaded::Done(login::start_login(ctx, &request)),
        Joined::Invalid(reason) => {
            log::info!("session cookie refused ({reason}): logging in again");
            return Loaded::Done(forget(ctx, &request, is_logout));
        }
    };
    let cookie = cache::digest(sealed.as_bytes());
    let (opened, checked_at) = match ctx.caches.cookie_sessions.get(&cookie, ctx.keys) {
        Some((opened, checked_at)) => (opened, Some(checked_at)),
        None => match cookie_codec::open(ctx.keys, base, &sealed) {
            Some(opened) => (Rc::new(opened), None),
            None => {
                log::info!(
                    "session cookie refused ({}): logging in again",
                    Refused::Seal
                );
                return Loaded::Done(forget(ctx, &request, is_logout));
            }
        },
    };
    jar.session = Some(Box::new(opened.session.clone()));
    Loaded::CheckDenyList(
        Box::new(Pending {
            request,
            cookie,
            opened,
            checked_at,
            logout: is_logout,
        }),
        Step::LoadDenyList {
            key: DENY_LIST_KEY.to_string(),
            unless_at: checked_at,
        },
    )
}

pub(super) fn with_deny_list<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    pending: Pending,
    stored: DenyListRead<'_>,
) -> Next {
    let Pending {
        request,
        cookie,
        opened,
        checked_at,
        logout,
    } = pending;
    let revoked = match stored {
        // Checked at this very generation, and the list has not changed since.
        DenyListRead::Unchanged(generation) if checked_at == Some(generation) => false,
        DenyListRead::Unchanged(_) => {
            // A host that answers what was not asked: never trust the cache then.
            log::error!("the deny-list was reported unchanged at another generation");
            true
        }
        DenyListRead::Read { generation, list } => {
            let revoked = denied(list, &ctx.config.issuer, &opened.session, ctx.now);
            if !revoked {
                let cache = &mut ctx.caches.cookie_sessions;
                cache.insert(cookie, ctx.keys, opened.clone(), generation);
            }
            revoked
        }
    };
    if revoked {
        ctx.caches.cookie_sessions.forget(&cookie);
        log::info!("session revoked by a back-channel logout: logging in again");
        return Next::Done(forget(ctx, &request, logout));
    }
    let session = opened.session.clone();
    let key = session_key(&session);
    if logout {
        // The cookie is denied from now on; this VM need not remember it.
        ctx.caches.cookie_sessions.forget(&cookie);
        return logout::logged_out(ctx, &request, Some(session), Some(key));
    }
    let reseal = opened
        .sealed_with_retired_key
        .then(|| Box::new(session.clone()));
    let mut next = identity::continue_session(ctx, request, session, key.clone());
    // A refresh or a touch writes the cookie anyway, with the first key.
    if let (Some(session), Next::Done(Step::Forward(forward))) = (reseal, &mut next) {
        if !forward
            .writes
            .iter()
            .any(|w| matches!(w, StoreWrite::Put { .. } | StoreWrite::Update { .. }))
        {
            forward.writes.push(StoreWrite::Put { key, session });
        }
    }
    next
}

fn denied(stored: Option<&[u8]>, issuer: &str, session: &Session, now: u64) -> bool {
    match stored {
        None | Some([]) => false,
        Some(bytes) => match DenyList::check_encoded(bytes, issuer, session, now) {
            Some(denied) => denied,
            None => {
                // Refusing every session here would log out everyone on this replica.
                log::error!("the cookie-session deny-list in shared data is unreadable; ignored");
                false
            }
        },
    }
}

/// No usable session: log in again (or finish the logout) and expire the cookies.
fn forget<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    request: &RequestHead,
    is_logout: bool,
) -> Step {
    let key = no_session_key();
    if is_logout {
        return logout::without_session(ctx, request, Some(key));
    }
    let mut step = login::start_login(ctx, request);
    if let Step::Respond(respond) = &mut step {
        respond.writes.push(StoreWrite::Delete { key });
    }
    step
}

/// Turns the flow's store writes into `Set-Cookie` headers: the local response
/// carries them, or the upstream's response for a forwarded request.
pub(super) fn writes_to_cookies<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    jar: &Jar,
    step: Step,
) -> Step {
    match step {
        Step::Forward(mut forward) => {
            let (releases, writes) = take_releases(std::mem::take(&mut forward.writes));
            forward.writes = releases;
            // Too large: the browser keeps the cookie it has, which still works.
            if let Some(headers) = cookie_headers(ctx, jar, writes) {
                forward.response_headers.extend(headers);
            }
            Step::Forward(forward)
        }
        Step::Respond(mut respond) => {
            let (releases, writes) = take_releases(std::mem::take(&mut respond.writes));
            respond.writes = releases;
            if writes.is_empty() {
                return Step::Respond(respond);
            }
            let Some(headers) = cookie_headers(ctx, jar, writes) else {
                return Step::Respond(Respond {
                    response: pages::error_page(
                        500,
                        "Login could not be completed",
                        "The session is too large to keep in cookies. Please ask the site's operators to keep fewer tokens or claims in it.",
                    ),
                    writes: respond.writes,
                });
            };
            // The flow names the session cookie as for shared data (an id, or an
            // expiry of the base name); the headers above replace those.
            let base = &ctx.config.cookies.session_name;
            respond.response.headers.retain(|(name, value)| {
                !(name == "set-cookie" && sets_session_cookie(value, base))
            });
            respond.response.headers.extend(headers);
            Step::Respond(respond)
        }
        // A refresh's outcome is published before its answer: the answer carries the cookies.
        Step::PublishRefresh {
            round,
            outcome,
            until,
            then,
        } => Step::PublishRefresh {
            round,
            outcome,
            until,
            then: Box::new(writes_to_cookies(ctx, jar, *then)),
        },
        other => other,
    }
}

/// Splits off the releases of refresh claims: they stay store writes, which
/// the host applies to the claim outside the cookie (see `refresh_lease`).
fn take_releases(writes: Vec<StoreWrite>) -> (Vec<StoreWrite>, Vec<StoreWrite>) {
    writes
        .into_iter()
        .partition(|w| matches!(w, StoreWrite::ReleaseRefresh { .. }))
}

/// `None` when the session does not fit in cookies.
fn cookie_headers<R: CryptoRngCore>(
    ctx: &mut Context<'_, R>,
    jar: &Jar,
    writes: Vec<StoreWrite>,
) -> Option<Vec<(String, String)>> {
    let attrs = &ctx.config.cookies.attributes;
    // A browser holds one session: the last write is what it must end up with.
    let session = match writes.into_iter().next_back() {
        None | Some(StoreWrite::ReleaseRefresh { .. }) => return Some(Vec::new()),
        Some(StoreWrite::Delete { .. }) => return Some(chunks::expire_headers(&jar.names, attrs)),
        // A cookie session exists as long as the browser sends it; one that
        // was logged out meanwhile is refused by the deny-list, since the
        // session keeps its creation time.
        Some(StoreWrite::Put { session, .. } | StoreWrite::Update { session, .. }) => session,
        Some(StoreWrite::Touch { at, .. }) => match &jar.session {
            Some(opened) => {
                let mut touched = opened.clone();
                touched.last_seen = at;
                touched
            }
            None => return Some(Vec::new()),
        },
    };
    let base = &ctx.config.cookies.session_name;
    let written = cookie_codec::write(&session, ctx.keys, base, ctx.rng)?;
    // The cookie goes when the session ends, not a full timeout after a touch.
    let max_age = session.expires_at.saturating_sub(ctx.now).max(1);
    Some(chunks::write_headers(&written, &jar.names, max_age, attrs))
}

fn sets_session_cookie(set_cookie: &str, base: &str) -> bool {
    let name = set_cookie.split(['=', ';']).next().unwrap_or_default();
    chunks::is_session_cookie(name.trim().as_bytes(), base)
}
