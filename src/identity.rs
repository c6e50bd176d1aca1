//! Identity resolution, written once for both stores (docs/metrics.md, Identity): the
//! person an id stands for, every id standing for a person, and the account a person was
//! grouped into at a time. Pure: the links come through [`Links`], which the embedded
//! rollup worker answers from `identity_links` and ClickHouse from the alias and identify
//! calls it read.
//!
//! An alias (previousId -> userId) or identify (anonymousId -> userId) links an id to a
//! user; an id's newest link wins, and links are followed for at most
//! [`limits::LINK_HOPS_MAX`] ids, so a cycle of links ends.

use std::collections::HashSet;

use crate::limits;

/// The links between ids that resolution follows.
pub trait Links {
    type Error;
    /// The userId `id` was most recently linked to, if any.
    fn newest_link(&mut self, id: &str) -> Result<Option<String>, Self::Error>;
    /// The ids linked directly to `user`.
    fn linked_to(&mut self, user: &str) -> Result<Vec<String>, Self::Error>;
}

/// The person `id` stands for: the user its newest links lead to. A userId stands for
/// itself when it was never linked on; an anonymous id never linked stands for nobody.
pub fn person_of<L: Links + ?Sized>(
    links: &mut L,
    id: &str,
    is_user: bool,
) -> Result<Option<String>, L::Error> {
    let mut current = id.to_string();
    let mut linked = false;
    let mut seen = HashSet::new();
    while seen.insert(current.clone()) && seen.len() <= limits::LINK_HOPS_MAX {
        match links.newest_link(&current)? {
            Some(next) => {
                current = next;
                linked = true;
            }
            None => break,
        }
    }
    Ok((is_user || linked).then_some(current))
}

/// Every id that stands for `person`: itself and the ids linked to it, transitively, at
/// most [`limits::IDENTITY_IDS_MAX`].
pub fn ids_of<L: Links + ?Sized>(links: &mut L, person: &str) -> Result<Vec<String>, L::Error> {
    let mut ids = vec![person.to_string()];
    let mut index = 0;
    while index < ids.len() && ids.len() < limits::IDENTITY_IDS_MAX {
        for id in links.linked_to(&ids[index])? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        index += 1;
    }
    Ok(ids)
}

/// Of a person's group calls sorted by time (`time_of`), the one in force at `at_ms`: the
/// last at or before it.
pub fn call_at<T>(sorted: &[T], at_ms: i64, time_of: impl Fn(&T) -> i64) -> Option<&T> {
    let index = sorted.partition_point(|call| time_of(call) <= at_ms);
    index.checked_sub(1).map(|i| &sorted[i])
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// Links as (previous id, user id), newest last.
    struct Listed(Vec<(String, String)>);

    fn listed(links: &[(&str, &str)]) -> Listed {
        Listed(
            links
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    impl Links for Listed {
        type Error = Infallible;
        fn newest_link(&mut self, id: &str) -> Result<Option<String>, Infallible> {
            Ok(self
                .0
                .iter()
                .rev()
                .find(|l| l.0 == id)
                .map(|l| l.1.to_string()))
        }
        fn linked_to(&mut self, user: &str) -> Result<Vec<String>, Infallible> {
            let mut ids: Vec<String> = self
                .0
                .iter()
                .filter(|l| l.1 == user)
                .map(|l| l.0.to_string())
                .collect();
            ids.dedup();
            Ok(ids)
        }
    }

    #[test]
    fn an_id_stands_for_the_user_its_newest_links_lead_to() {
        let mut links = listed(&[
            ("anon-1", "u-old"),
            ("anon-1", "u-new"),
            ("u-new", "u-final"),
        ]);
        assert_eq!(
            person_of(&mut links, "anon-1", false),
            Ok(Some("u-final".into()))
        );
        assert_eq!(
            person_of(&mut links, "u-final", true),
            Ok(Some("u-final".into()))
        );
        assert_eq!(
            person_of(&mut links, "anon-2", false),
            Ok(None),
            "never linked"
        );
        assert_eq!(person_of(&mut links, "u-2", true), Ok(Some("u-2".into())));
    }

    #[test]
    fn a_cycle_of_links_ends_within_the_hop_limit() {
        let mut links = listed(&[("a", "b"), ("b", "a")]);
        assert_eq!(
            person_of(&mut links, "a", true),
            Ok(Some("a".into())),
            "back where it began"
        );
        let chain = (0..40)
            .map(|i| (format!("id{i}"), format!("id{}", i + 1)))
            .collect();
        let stopped = person_of(&mut Listed(chain), "id0", true).unwrap().unwrap();
        assert_eq!(stopped, format!("id{}", limits::LINK_HOPS_MAX));
    }

    #[test]
    fn a_persons_ids_are_every_id_linked_into_it_transitively() {
        let mut links = listed(&[("anon-1", "u-1"), ("u-0", "u-1"), ("anon-0", "u-0")]);
        let mut ids = ids_of(&mut links, "u-1").unwrap();
        ids.sort();
        assert_eq!(ids, ["anon-0", "anon-1", "u-0", "u-1"]);
    }

    #[test]
    fn the_account_at_a_time_is_the_last_group_call_at_or_before_it() {
        let calls = [(100, "acct-a"), (200, "acct-b"), (200, "acct-c")];
        let at = |ts| call_at(&calls, ts, |c| c.0).map(|c| c.1);
        assert_eq!(at(99), None);
        assert_eq!(at(100), Some("acct-a"));
        assert_eq!(at(199), Some("acct-a"));
        assert_eq!(at(200), Some("acct-c"), "ties: the later call");
    }
}
