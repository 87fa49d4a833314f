-- The six sakila tables the demo uses, loaded from the CSVs shipped in the package
-- (sqla_memcache/data/sakila, mounted read-only at /var/lib/mysql-files/sakila by
-- docker-compose.yml). Column types follow the original sakila schema; empty CSV
-- fields are NULL. Runs once, when the database volume is first created.
CREATE DATABASE IF NOT EXISTS sakila CHARACTER SET utf8mb4;
USE sakila;

CREATE TABLE language (
  language_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name CHAR(20) NOT NULL,
  last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
);

CREATE TABLE category (
  category_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(25) NOT NULL,
  last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
);

CREATE TABLE actor (
  actor_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  first_name VARCHAR(45) NOT NULL,
  last_name VARCHAR(45) NOT NULL,
  last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  KEY idx_actor_last_name (last_name)
);

CREATE TABLE film (
  film_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  title VARCHAR(128) NOT NULL,
  description TEXT,
  release_year YEAR,
  language_id TINYINT UNSIGNED NOT NULL,
  original_language_id TINYINT UNSIGNED,
  rental_duration TINYINT UNSIGNED NOT NULL DEFAULT 3,
  rental_rate DECIMAL(4,2) NOT NULL DEFAULT 4.99,
  length SMALLINT UNSIGNED,
  replacement_cost DECIMAL(5,2) NOT NULL DEFAULT 19.99,
  rating ENUM('G','PG','PG-13','R','NC-17') DEFAULT 'G',
  special_features SET('Trailers','Commentaries','Deleted Scenes','Behind the Scenes'),
  last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  KEY idx_title (title),
  CONSTRAINT fk_film_language FOREIGN KEY (language_id) REFERENCES language (language_id),
  CONSTRAINT fk_film_language_original FOREIGN KEY (original_language_id) REFERENCES language (language_id)
);

CREATE TABLE film_actor (
  actor_id SMALLINT UNSIGNED NOT NULL,
  film_id SMALLINT UNSIGNED NOT NULL,
  last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (actor_id, film_id),
  KEY idx_fk_film_id (film_id),
  CONSTRAINT fk_film_actor_actor FOREIGN KEY (actor_id) REFERENCES actor (actor_id),
  CONSTRAINT fk_film_actor_film FOREIGN KEY (film_id) REFERENCES film (film_id)
);

CREATE TABLE film_category (
  film_id SMALLINT UNSIGNED NOT NULL,
  category_id TINYINT UNSIGNED NOT NULL,
  last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (film_id, category_id),
  CONSTRAINT fk_film_category_film FOREIGN KEY (film_id) REFERENCES film (film_id),
  CONSTRAINT fk_film_category_category FOREIGN KEY (category_id) REFERENCES category (category_id)
);

LOAD DATA INFILE '/var/lib/mysql-files/sakila/language.csv' INTO TABLE language
  CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\r\n'
  IGNORE 1 LINES (language_id, name, last_update);

LOAD DATA INFILE '/var/lib/mysql-files/sakila/category.csv' INTO TABLE category
  CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\r\n'
  IGNORE 1 LINES (category_id, name, last_update);

LOAD DATA INFILE '/var/lib/mysql-files/sakila/actor.csv' INTO TABLE actor
  CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\r\n'
  IGNORE 1 LINES (actor_id, first_name, last_name, last_update);

LOAD DATA INFILE '/var/lib/mysql-files/sakila/film.csv' INTO TABLE film
  CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\r\n'
  IGNORE 1 LINES
  (film_id, title, @description, @release_year, language_id, @original_language_id, rental_duration,
   rental_rate, @length, replacement_cost, rating, last_update, @special_features)
  SET description = NULLIF(@description, ''),
      release_year = NULLIF(@release_year, ''),
      original_language_id = NULLIF(@original_language_id, ''),
      length = NULLIF(@length, ''),
      special_features = NULLIF(@special_features, '');

LOAD DATA INFILE '/var/lib/mysql-files/sakila/film_actor.csv' INTO TABLE film_actor
  CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\r\n'
  IGNORE 1 LINES (actor_id, film_id, last_update);

LOAD DATA INFILE '/var/lib/mysql-files/sakila/film_category.csv' INTO TABLE film_category
  CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' LINES TERMINATED BY '\r\n'
  IGNORE 1 LINES (film_id, category_id, last_update);
