//! Which transitions `tracer trace` prints.

use tracer_common::TcpState;

use crate::kernel::event::{Family, Transition};

/// Each non-empty list must match (any of its values); empty lists match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Local or remote port.
    pub ports: Vec<u16>,
    /// Old or new state.
    pub states: Vec<TcpState>,
    pub family: Option<Family>,
    /// The task current in the kernel at the transition.
    pub pids: Vec<u32>,
    /// Network namespace inode.
    pub netns: Vec<u32>,
}

impl Filter {
    pub fn matches(&self, t: &Transition) -> bool {
        fn any<T: PartialEq>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(f)
        }
        any(&self.ports, |p| {
            *p == t.local.port() || *p == t.remote.port()
        }) && any(&self.states, |s| *s == t.old || *s == t.new)
            && self.family.is_none_or(|f| f == t.family)
            && any(&self.pids, |p| *p == t.pid)
            && any(&self.netns, |n| *n == t.netns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::event::tests::sample_event;

    fn sample() -> Transition {
        Transition::try_from(&sample_event()).unwrap()
    }

    #[test]
    fn empty_matches_everything() {
        assert!(Filter::default().matches(&sample()));
    }

    #[test]
    fn each_criterion() {
        let t = sample(); // 127.0.0.1:40000 -> :8080, ESTABLISHED -> FIN_WAIT1, pid 4242
        let f = |f: Filter| f.matches(&t);
        assert!(f(Filter {
            ports: vec![8080],
            ..Default::default()
        }));
        assert!(f(Filter {
            ports: vec![1, 40000],
            ..Default::default()
        }));
        assert!(!f(Filter {
            ports: vec![80],
            ..Default::default()
        }));
        assert!(f(Filter {
            states: vec![TcpState::FinWait1],
            ..Default::default()
        }));
        assert!(f(Filter {
            states: vec![TcpState::Established],
            ..Default::default()
        }));
        assert!(!f(Filter {
            states: vec![TcpState::Listen],
            ..Default::default()
        }));
        assert!(f(Filter {
            family: Some(Family::V4),
            ..Default::default()
        }));
        assert!(!f(Filter {
            family: Some(Family::V6),
            ..Default::default()
        }));
        assert!(f(Filter {
            pids: vec![4242],
            ..Default::default()
        }));
        assert!(!f(Filter {
            pids: vec![4243],
            ..Default::default()
        }));
        assert!(f(Filter {
            netns: vec![4026531840],
            ..Default::default()
        }));
        assert!(!f(Filter {
            netns: vec![1],
            ..Default::default()
        }));
        // All criteria must hold together.
        assert!(!f(Filter {
            ports: vec![8080],
            pids: vec![1],
            ..Default::default()
        }));
    }
}
