//! Text made safe for the HTML the agent serves: the portal's pages and the
//! doctor's page. Below both, so that the portal can show the doctor's
//! report without the doctor reaching back into the portal. Also how those
//! pages write what a person reads: release notes in Markdown, rendered with
//! no raw HTML passed through; times in the server's own zone, named; sizes.

use std::sync::OnceLock;

use chrono::{DateTime, Local, Utc};
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The frame of the agent's pages but the portal's home: `title`, then
/// `body`. `live_every_ms` makes `web/portal/portal.js` follow the page's
/// `data-live` regions (and, without scripts, the page reload itself).
pub fn page(title: &str, body: &str, live_every_ms: Option<u64>) -> String {
    let (refresh, live) = match live_every_ms {
        Some(ms) => (
            format!(
                "<noscript><meta http-equiv=\"refresh\" content=\"{}\"></noscript>",
                ms.div_ceil(1000)
            ),
            format!(" data-live-every=\"{ms}\""),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
         <title>{t}</title><link rel=\"stylesheet\" href=\"/style.css\"><script src=\"/portal.js\" defer></script></head>\
         <body{live}><header class=\"top\"><div class=\"brand\"><a href=\"/\">Flotilla</a> <span class=\"muted\">update service</span></div></header>\
         <main>{body}</main></body></html>",
        t = escape(title),
    )
}

/// A duration out of service as a person reads it: `27 ms`, `6.0 s`.
pub fn downtime(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// Markdown (release notes) as HTML a page can hold safely: HTML written in
/// the Markdown is shown as text, links go only to `http`, `https` or
/// `mailto` addresses (others keep their text and lose the link), and
/// images are shown as their description (the portal loads nothing from
/// elsewhere).
pub fn markdown(text: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut dropped_links = Vec::new();
    let events = Parser::new_ext(text, options).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::HtmlBlock) | Event::End(TagEnd::HtmlBlock) => None,
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        Event::Start(Tag::Link { ref dest_url, .. }) => {
            let kept = safe_link(dest_url);
            dropped_links.push(!kept);
            kept.then_some(event)
        }
        Event::End(TagEnd::Link) => match dropped_links.pop() {
            Some(true) => None,
            _ => Some(event),
        },
        other => Some(other),
    });
    let mut out = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

fn safe_link(url: &CowStr) -> bool {
    let url = url.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
}

/// The zone the server's times are shown in: the `TZ` the agent runs
/// under, or the system's zone, by its IANA name; the system's offset when
/// neither can be named.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Named(chrono_tz::Tz),
    Local,
}

fn zone() -> Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    *ZONE.get_or_init(|| {
        let from_env = std::env::var("TZ")
            .ok()
            .map(|tz| tz.trim_start_matches(':').to_owned());
        from_env
            .into_iter()
            .chain(iana_time_zone::get_timezone().ok())
            .find_map(|name| name.parse::<chrono_tz::Tz>().ok())
            .map_or(Zone::Local, Zone::Named)
    })
}

/// The name of the server's zone, for a page's footer:
/// `Europe/Paris (UTC+01:00)`.
pub fn zone_name() -> String {
    let now = Utc::now();
    match zone() {
        Zone::Named(tz) => format!(
            "{} (UTC{})",
            tz.name(),
            now.with_timezone(&tz).format("%:z")
        ),
        Zone::Local => format!("UTC{}", now.with_timezone(&Local).format("%:z")),
    }
}

/// A time as the server's clock shows it, the zone named:
/// `2026-12-07 21:15:03 CET`.
pub fn local_time(at: DateTime<Utc>) -> String {
    match zone() {
        Zone::Named(tz) => at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Zone::Local => at
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S UTC%:z")
            .to_string(),
    }
}

/// [`local_time`] in a `<time>` element that carries the exact instant.
pub fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        escape(&local_time(at))
    )
}

/// A size as a person reads it: `812 bytes`, `4.2 KB`, `512.0 MB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn markdown_is_rendered_and_raw_html_is_shown_as_text() {
        let html = markdown(
            "# 5.9.1\n\n- **Faster** checkout\n- fixes `VAT`\n\n<script>alert(1)</script>\n\n\
             Text with <b onmouseover=\"x()\">inline</b> HTML, [notes](https://example.com/n), \
             [a trap](javascript:alert(1)), ![logo](https://evil.example/t.png)\n",
        );
        for expected in [
            "<h1>5.9.1</h1>",
            "<li><strong>Faster</strong> checkout</li>",
            "<code>VAT</code>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "&lt;b onmouseover=\"x()\"&gt;inline&lt;/b&gt;",
            "<a href=\"https://example.com/n\">notes</a>",
            "a trap",
            "logo",
        ] {
            assert!(html.contains(expected), "{expected} in {html}");
        }
        for absent in ["<script", "<b ", "javascript:", "<img", "evil.example"] {
            assert!(!html.contains(absent), "{absent} in {html}");
        }
    }

    #[test]
    fn sizes_read_as_a_person_writes_them() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (999, "999 bytes"),
            (4_200, "4.2 KB"),
            (512_000_000, "512.0 MB"),
            (3_100_000_000, "3.1 GB"),
        ] {
            assert_eq!(size(bytes), text);
        }
    }

    #[test]
    fn a_time_carries_its_instant_and_names_its_zone() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T20:15:03Z")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timezone(&Utc);
        let html = time(at);
        assert!(
            html.starts_with("<time datetime=\"2026-12-07T20:15:03Z\">"),
            "{html}"
        );
        let shown = local_time(at);
        // The zone is named: an abbreviation or an offset, after the time.
        assert!(shown.len() > "2026-12-07 20:15:03 ".len(), "{shown}");
        assert!(zone_name().contains("UTC"), "{}", zone_name());
    }
}
