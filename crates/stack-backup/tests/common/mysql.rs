//! The host's MariaDB (`scripts/services.sh`): a throwaway database owned
//! by its application's own user, like [`super::TempDb`] for PostgreSQL.

use mysql::prelude::Queryable;

/// The admin URL of the test server (`SB_TEST_MYSQL_ADMIN_URL`): creates
/// fixtures and is the `admin-url` restores need.
pub fn admin_url() -> String {
    std::env::var("SB_TEST_MYSQL_ADMIN_URL")
        .unwrap_or_else(|_| "mysql://sbtest_admin:sbtest-admin-pw@127.0.0.1:3306/mysql".into())
}

/// A session as the admin.
pub fn admin() -> mysql::Conn {
    mysql::Conn::new(mysql::Opts::from_url(&admin_url()).unwrap()).unwrap_or_else(|e| {
        panic!("MariaDB is not reachable for tests ({e}); run scripts/services.sh")
    })
}

/// A database and a user with privileges on it only (no global ones):
/// the credentials a real stack's URL holds. Both dropped on drop, with
/// any database named after it that a restore or drill left.
pub struct TempMysql {
    pub name: String,
    pub user: String,
    password: String,
}

impl TempMysql {
    pub fn new() -> Self {
        let name = super::unique("sbm");
        let user = format!("{name}_app");
        let password = format!("pw-{user}");
        let mut a = admin();
        a.query_drop(format!("CREATE DATABASE `{name}`")).unwrap();
        a.query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        ))
        .unwrap();
        a.query_drop(format!(
            "GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%'"
        ))
        .unwrap();
        Self {
            name,
            user,
            password,
        }
    }

    /// The application's URL.
    pub fn url(&self) -> String {
        let admin = admin_url();
        let host = admin
            .rsplit_once('@')
            .map_or("127.0.0.1:3306/x", |(_, h)| h);
        let host = host.rsplit_once('/').map_or(host, |(h, _)| h);
        format!(
            "mysql://{}:{}@{host}/{}",
            self.user, self.password, self.name
        )
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// A session as the application.
    pub fn client(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url()).unwrap()).unwrap()
    }

    /// Runs statements as the application.
    pub fn sql(&self, text: &str) {
        self.client()
            .query_drop(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }

    /// Tables with foreign keys, binary data, and an Alembic revision.
    pub fn seed(&self, rows: u32, revision: &str) {
        self.sql(&format!(
            "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) NOT NULL, note TEXT) ENGINE=InnoDB;
             INSERT INTO customers (name, note) SELECT CONCAT('c', seq), REPEAT('é', seq % 50) FROM seq_1_to_{rows};
             CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,2),
                                  blob_col VARBINARY(16), FOREIGN KEY (customer) REFERENCES customers(id)) ENGINE=InnoDB;
             INSERT INTO orders (customer, total, blob_col) SELECT 1 + seq % {rows}, seq * 1.5, UNHEX(MD5(seq)) FROM seq_1_to_{};
             CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
             INSERT INTO alembic_version VALUES ('{revision}');",
            rows * 3
        ));
    }

    /// Every base table with a checksum of its rows, as the admin sees it.
    pub fn digest(&self) -> Vec<(String, String)> {
        let mut a = admin();
        let tables: Vec<String> = a
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1",
                (&self.name,),
            )
            .unwrap();
        tables
            .into_iter()
            .map(|t| {
                let row: Option<(String, Option<u64>)> = a
                    .query_first(format!("CHECKSUM TABLE `{}`.`{t}` EXTENDED", self.name))
                    .unwrap();
                let sum = row
                    .and_then(|r| r.1)
                    .map_or("none".into(), |s| s.to_string());
                (t, sum)
            })
            .collect()
    }

    /// Databases other than this one whose name starts with its name
    /// (what a restore or drill left behind).
    pub fn leftovers(&self) -> Vec<String> {
        let like = format!("{}\\_\\_%", self.name.replace('_', "\\_"));
        admin()
            .exec(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
                (like,),
            )
            .unwrap()
    }
}

impl Drop for TempMysql {
    fn drop(&mut self) {
        if let Ok(mut a) = mysql::Conn::new(mysql::Opts::from_url(&admin_url()).unwrap()) {
            for db in self.leftovers() {
                let _ = a.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"));
            }
            let _ = a.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
            let _ = a.query_drop(format!("DROP USER IF EXISTS '{}'@'%'", self.user));
        }
    }
}
