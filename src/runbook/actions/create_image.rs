//! `aws:createImage`: an AMI from an instance, waited for.
//!
//! Not built yet: a step of this action is refused at load (issue 14 builds it).

not_built_yet!(CreateImage, CreateImage);
