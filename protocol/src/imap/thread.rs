//! THREAD and UID THREAD with the ORDEREDSUBJECT and REFERENCES algorithms (RFC 5256
//! §2.3, §2.4, §4), over the messages a search selects.
//!
//! Both build a forest in an arena (`Node`s linked by index), then write it. Nothing
//! here recurses: the References chains of client-supplied mail can be arbitrarily
//! long or cyclic, so links are checked for loops by walking up with a step bound, and
//! the tree is written with an explicit stack.

use std::collections::HashMap;

use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::search::SearchKey;

use super::sort::Sortable;
use super::*;

/// A thread-tree node: a message (an index into the sorted messages) or a dummy.
#[derive(Default, Clone)]
struct Node {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest {
    nodes: Vec<Node>,
}

impl Forest {
    /// Whether `ancestor` is `node` or above it.
    fn is_ancestor(&self, ancestor: usize, node: usize) -> bool {
        let mut cur = Some(node);
        // A parent chain is at most as long as there are nodes; the bound only guards
        // against a bug turning into a hang.
        for _ in 0..=self.nodes.len() {
            match cur {
                Some(c) if c == ancestor => return true,
                Some(c) => cur = self.nodes[c].parent,
                None => return false,
            }
        }
        true
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }
}

impl ImapSession {
    pub(super) fn thread(
        &mut self,
        tag: &str,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &str,
        search: &[SearchKey<'_>],
        uid: bool,
        out: &mut Vec<u8>,
    ) -> Flow {
        let references = match algorithm {
            ThreadingAlgorithm::OrderedSubject => false,
            ThreadingAlgorithm::References => true,
            ThreadingAlgorithm::Other(_) => return self.bad(out, tag, "Unsupported threading algorithm"),
        };
        if let Err(flow) = self.charset_ok(Some(charset), true, tag, out) {
            return flow;
        }
        if let Err(flow) = self.keys_ok(search, tag, out) {
            return flow;
        }
        let items = match self.sortables(search, true) {
            Ok(items) => items,
            Err(err) => return backend_no(out, tag, &err),
        };
        let (forest, roots) = if references {
            by_references(&items)
        } else {
            by_ordered_subject(&items)
        };
        out.extend_from_slice(b"* THREAD");
        if !roots.is_empty() {
            out.push(b' ');
        }
        write_threads(&forest, &roots, &items, uid, out);
        out.extend_from_slice(b"\r\n");
        self.catch_up(uid, out);
        ok(
            out,
            tag,
            if uid {
                "UID THREAD completed"
            } else {
                "THREAD completed"
            },
        )
    }
}

/// Sent date, then sequence number: how siblings and threads are ordered.
fn date_key(items: &[Sortable], i: usize) -> (i64, usize) {
    (items[i].sent_date(), items[i].index)
}

/// RFC 5256 §2.3: messages grouped by base subject, each group in date order, the
/// first message the parent of all the others; groups ordered by their first message.
fn by_ordered_subject(items: &[Sortable]) -> (Forest, Vec<usize>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        items[a]
            .summary
            .subject
            .cmp(&items[b].summary.subject)
            .then(date_key(items, a).cmp(&date_key(items, b)))
    });
    let mut forest = Forest {
        nodes: (0..items.len())
            .map(|i| Node {
                message: Some(i),
                ..Node::default()
            })
            .collect(),
    };
    let mut roots = Vec::new();
    let mut current: Option<usize> = None;
    for i in order {
        match current {
            Some(root) if items[root].summary.subject == items[i].summary.subject => forest.link(root, i),
            _ => {
                roots.push(i);
                current = Some(i);
            }
        }
    }
    roots.sort_by_key(|&r| date_key(items, r));
    (forest, roots)
}

/// RFC 5256 §2.4 (after Jamie Zawinski's algorithm).
fn by_references(items: &[Sortable]) -> (Forest, Vec<usize>) {
    let mut forest = Forest { nodes: Vec::new() };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    // (1) A node per Message-ID; a message without one, or with one already taken by
    // another message, gets a node of its own.
    let mut node_of = vec![0usize; items.len()];
    for (i, item) in items.iter().enumerate() {
        let node = match item.summary.message_id.as_deref() {
            Some(id) => match by_id.get(id) {
                Some(&n) if forest.nodes[n].message.is_none() => {
                    forest.nodes[n].message = Some(i);
                    n
                }
                Some(_) => forest.add(Node::default()),
                None => {
                    let n = forest.add(Node::default());
                    by_id.insert(id, n);
                    n
                }
            },
            None => forest.add(Node::default()),
        };
        forest.nodes[node].message = Some(i);
        node_of[i] = node;
        // (1A) Link the References chain, each one the parent of the next, unless either
        // already has a parent or the link would make a loop.
        let mut previous: Option<usize> = None;
        for reference in &item.summary.references {
            let r = match by_id.get(reference.as_str()) {
                Some(&n) => n,
                None => {
                    let n = forest.add(Node::default());
                    by_id.insert(reference.as_str(), n);
                    n
                }
            };
            if let Some(p) = previous {
                if forest.nodes[r].parent.is_none() && !forest.is_ancestor(r, p) {
                    forest.link(p, r);
                }
            }
            previous = Some(r);
        }
        // (1B) The last reference is this message's parent, replacing any other.
        forest.unlink(node);
        if let Some(p) = previous {
            if !forest.is_ancestor(node, p) {
                forest.link(p, node);
            }
        }
    }
    // (2) The roots.
    let mut roots: Vec<usize> = (0..forest.nodes.len())
        .filter(|&n| forest.nodes[n].parent.is_none())
        .collect();
    // (3) Prune dummies: without children they go; with children they give their
    // children to their own parent, except a root dummy with more than one child.
    // Children are visited before parents (a stack of nodes to finish).
    let mut new_roots = Vec::new();
    for root in roots {
        let mut stack = vec![(root, false)];
        while let Some((n, visited)) = stack.pop() {
            if !visited {
                stack.push((n, true));
                for &c in forest.nodes[n].children.clone().iter() {
                    stack.push((c, false));
                }
                continue;
            }
            if forest.nodes[n].message.is_some() {
                continue;
            }
            let is_root = forest.nodes[n].parent.is_none();
            let children = forest.nodes[n].children.clone();
            if is_root && children.len() > 1 {
                continue;
            }
            match forest.nodes[n].parent {
                Some(p) => {
                    forest.unlink(n);
                    for c in children {
                        forest.link(p, c);
                    }
                }
                None => {
                    for c in children {
                        forest.unlink(c);
                        new_roots.push(c);
                    }
                    forest.nodes[n].children.clear();
                }
            }
        }
        if forest.nodes[root].parent.is_none()
            && (forest.nodes[root].message.is_some() || !forest.nodes[root].children.is_empty())
        {
            new_roots.push(root);
        }
    }
    roots = new_roots;
    // (4) Siblings in date order, a dummy dated by its first child.
    sort_siblings(&mut forest, &mut roots, items);
    // (5) Roots with the same base subject are gathered.
    let subject_of = |forest: &Forest, n: usize| -> Option<usize> {
        let node = &forest.nodes[n];
        node.message
            .or_else(|| node.children.first().and_then(|&c| forest.nodes[c].message))
    };
    let mut table: HashMap<String, usize> = HashMap::new();
    for &r in &roots {
        let Some(m) = subject_of(&forest, r) else { continue };
        let subject = &items[m].summary.subject;
        if subject.is_empty() {
            continue;
        }
        match table.get(subject) {
            None => {
                table.insert(subject.clone(), r);
            }
            Some(&old) => {
                let old_is_dummy = forest.nodes[old].message.is_none();
                let this_is_dummy = forest.nodes[r].message.is_none();
                let old_is_reply = forest.nodes[old]
                    .message
                    .is_some_and(|o| items[o].summary.subject_is_reply);
                let this_is_reply = forest.nodes[r]
                    .message
                    .is_some_and(|t| items[t].summary.subject_is_reply);
                if (this_is_dummy && !old_is_dummy) || (old_is_reply && !this_is_dummy && !this_is_reply) {
                    table.insert(subject.clone(), r);
                }
            }
        }
    }
    let mut kept = Vec::new();
    for r in roots {
        let entry = subject_of(&forest, r)
            .map(|m| &items[m].summary.subject)
            .filter(|s| !s.is_empty())
            .and_then(|s| table.get(s).copied().map(|t| (s.clone(), t)));
        let Some((subject, t)) = entry.filter(|(_, t)| *t != r) else {
            kept.push(r);
            continue;
        };
        let table_dummy = forest.nodes[t].message.is_none();
        let this_dummy = forest.nodes[r].message.is_none();
        let this_reply = forest.nodes[r]
            .message
            .is_some_and(|m| items[m].summary.subject_is_reply);
        let table_reply = forest.nodes[t]
            .message
            .is_some_and(|m| items[m].summary.subject_is_reply);
        if table_dummy && this_dummy {
            for c in forest.nodes[r].children.clone() {
                forest.link(t, c);
            }
        } else if table_dummy || (this_reply && !table_reply) {
            // Under the dummy, or a reply under the message it answers by subject.
            forest.link(t, r);
        } else {
            // A new dummy holds both, in the table's place among the roots.
            let d = forest.add(Node::default());
            forest.link(d, t);
            forest.link(d, r);
            // The table's root may come later among the roots: it is then linked
            // under `d` again when its turn comes, and `d` takes a place now.
            match kept.iter().position(|&k| k == t) {
                Some(pos) => kept[pos] = d,
                None => kept.push(d),
            }
            table.insert(subject, d);
        }
    }
    roots = kept;
    // (6) Siblings in date order again, now that subjects merged threads.
    sort_siblings(&mut forest, &mut roots, items);
    (forest, roots)
}

/// Sorts every set of siblings (and the roots) by sent date, a dummy taking the date
/// of its earliest child. Children before parents, iteratively.
fn sort_siblings(forest: &mut Forest, roots: &mut [usize], items: &[Sortable]) {
    let mut key: HashMap<usize, (i64, usize)> = HashMap::new();
    let mut stack: Vec<(usize, bool)> = roots.iter().map(|&r| (r, false)).collect();
    while let Some((n, visited)) = stack.pop() {
        if !visited {
            stack.push((n, true));
            stack.extend(forest.nodes[n].children.iter().map(|&c| (c, false)));
            continue;
        }
        let mut children = std::mem::take(&mut forest.nodes[n].children);
        children.sort_by_key(|c| key.get(c).copied().unwrap_or((i64::MAX, usize::MAX)));
        let own = match forest.nodes[n].message {
            Some(m) => date_key(items, m),
            None => children
                .first()
                .and_then(|c| key.get(c).copied())
                .unwrap_or((i64::MAX, usize::MAX)),
        };
        forest.nodes[n].children = children;
        key.insert(n, own);
    }
    roots.sort_by_key(|r| key.get(r).copied().unwrap_or((i64::MAX, usize::MAX)));
}

/// Writes the threads as RFC 5256 §4 `thread-list`s, one after the other: a
/// chain of single children is written as numbers in one list, two or more children as
/// nested lists (`(3 6 (4 23)(44 7 96))`), a dummy without its number.
fn write_threads(forest: &Forest, roots: &[usize], items: &[Sortable], uid: bool, out: &mut Vec<u8>) {
    enum Step {
        List(usize),
        Close,
    }
    let number = |m: usize| {
        if uid {
            items[m].uid
        } else {
            items[m].index as u32 + 1
        }
    };
    for &root in roots {
        let mut stack = vec![Step::List(root)];
        while let Some(step) = stack.pop() {
            let node = match step {
                Step::Close => {
                    out.push(b')');
                    continue;
                }
                Step::List(n) => n,
            };
            out.push(b'(');
            let mut cur = node;
            let mut first = true;
            loop {
                let n = &forest.nodes[cur];
                if let Some(m) = n.message {
                    if !first {
                        out.push(b' ');
                    }
                    out.extend_from_slice(number(m).to_string().as_bytes());
                    first = false;
                }
                match n.children.as_slice() {
                    [only] if n.message.is_some() => cur = *only,
                    [] => {
                        out.push(b')');
                        break;
                    }
                    children => {
                        if !first {
                            out.push(b' ');
                        }
                        stack.push(Step::Close);
                        stack.extend(children.iter().rev().map(|&c| Step::List(c)));
                        break;
                    }
                }
            }
        }
    }
}
