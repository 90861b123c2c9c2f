-- An agent package is built for one platform (linux-x86_64,
-- windows-x86_64), and one release carries one per platform: a module
-- version is unique per platform. '' is a package for every platform (every
-- module package that is not the agent).
ALTER TABLE packages ADD COLUMN platform TEXT COLLATE "C" NOT NULL DEFAULT '';
-- Agent packages published before were Linux's: only Linux agents updated
-- themselves until now.
UPDATE packages SET platform = 'linux-x86_64' WHERE module = 'flotilla-agent';
ALTER TABLE packages DROP CONSTRAINT packages_module_version_key;
ALTER TABLE packages ADD CONSTRAINT packages_module_version_platform_key UNIQUE (module, version, platform);
